"""How the runtime tells a dependency outage from poison input.

A record that can never be processed (undecodable, schema-violating,
impossible values) goes to the dead-letter topic. A database, object store or
broker that is down is *not* the record's fault: the consumer pauses and
retries the same batch until the dependency is back. The classification is a
small injectable function so a service can extend it.
"""

from __future__ import annotations

from collections.abc import Callable

from schemas.errors import EventError


class DependencyUnavailable(Exception):
    """A dependency (PostgreSQL, Redis, object store, broker) cannot be reached right now."""

    def __init__(self, dependency: str, cause: BaseException | str) -> None:
        super().__init__(f"{dependency} unavailable: {cause}")
        self.dependency = dependency


class DeliveryFailed(Exception):
    """The broker did not acknowledge one or more produced records."""


ErrorClassifier = Callable[[BaseException], str]
"""Maps an exception to ``"retry"`` (dependency outage) or ``"dead_letter"`` (poison)."""


def _outage_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [
        DependencyUnavailable,
        DeliveryFailed,
        ConnectionError,
        TimeoutError,
        OSError,
    ]
    try:
        import asyncpg

        types += [
            asyncpg.exceptions.PostgresConnectionError,
            asyncpg.exceptions.CannotConnectNowError,
            asyncpg.exceptions.InterfaceError,
            asyncpg.exceptions.TooManyConnectionsError,
            asyncpg.exceptions.AdminShutdownError,
        ]
    except ImportError:  # pragma: no cover - asyncpg is a hard dependency
        pass
    try:
        import redis.exceptions

        types += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    except ImportError:  # pragma: no cover
        pass
    try:
        import urllib3.exceptions

        types += [urllib3.exceptions.HTTPError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


_OUTAGES = _outage_types()


def default_classifier(exc: BaseException) -> str:
    """Poison for event errors, retry for known outage types, poison for everything else.

    Unknown exceptions are treated as poison so one bad record cannot stall a
    partition forever; the DLQ headers name the exception for triage.
    """
    if isinstance(exc, EventError):
        return "dead_letter"
    if isinstance(exc, _OUTAGES):
        return "retry"
    return "dead_letter"
