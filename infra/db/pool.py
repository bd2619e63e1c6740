"""The asyncpg pool, with connection failures reported as dependency outages."""

from __future__ import annotations

import asyncpg

from infra.errors import DependencyUnavailable
from infra.settings import PostgresSettings


async def create_pool(settings: PostgresSettings) -> asyncpg.Pool:
    """Open a pool on the configured DSN; raise DependencyUnavailable if unreachable."""
    dsn = settings.url.get_secret_value()
    if not dsn:
        raise DependencyUnavailable("postgres", "no URL configured (run `waferstream stack up`)")
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            command_timeout=settings.command_timeout_s,
        )
    except (OSError, asyncpg.exceptions.PostgresConnectionError) as exc:
        raise DependencyUnavailable("postgres", exc) from exc
    assert pool is not None
    return pool
