"""Real servers for the test suite: a Kafka-protocol broker, PostgreSQL, Redis, S3.

The broker (tansu) always starts here. PostgreSQL and Redis are the
machine's own when they answer on their standard ports (as in CI), and the
embedded ones from the project's dependencies otherwise, so ``make test``
works on a bare machine too. S3 is a local moto server.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.stack.components import Broker, EmbeddedPostgres, EmbeddedRedis
from infra.stack.processes import wait_for_port
from tests.ports import free_port

MACHINE_PG = "postgresql://postgres@127.0.0.1:5432/test"
MACHINE_REDIS = "redis://127.0.0.1:6379/0"


def own_stack_cli(data_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The ``waferstream`` command line and an environment for a private embedded stack.

    For tests that run the CLI as a user would: no inherited WAFERSTREAM_
    setting (so nothing points at the test session's servers), free ports and
    its own data directory; only an explicitly chosen model is kept.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("WAFERSTREAM_")}
    env.update({
        "WAFERSTREAM_DATA_DIR": str(data_dir),
        "WAFERSTREAM_STACK__KAFKA_PORT": str(free_port()),
        "WAFERSTREAM_STACK__POSTGRES_PORT": str(free_port()),
        "WAFERSTREAM_STACK__REDIS_PORT": str(free_port()),
    })
    if os.environ.get("WAFERSTREAM_MODEL__PATH"):
        env["WAFERSTREAM_MODEL__PATH"] = os.environ["WAFERSTREAM_MODEL__PATH"]
    return [sys.executable, "-m", "infra"], env


def _answers(port: int) -> bool:
    return wait_for_port(port, 0.5)


@contextmanager
def broker() -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="ws-broker-"))
    component = Broker(root, free_port())
    address = component.start()
    try:
        yield address
    finally:
        component.stop()


@contextmanager
def _machine_or_embedded(port: int, machine_url: str, component_type: type, prefix: str) -> Iterator[str]:  # type: ignore[type-arg]
    """The machine's server if it answers on ``port``, else an embedded one for the session."""
    if _answers(port):
        yield machine_url
        return
    component = component_type(Path(tempfile.mkdtemp(prefix=prefix)), free_port())
    url = component.start()
    try:
        yield url
    finally:
        component.stop()


def postgres() -> contextlib.AbstractContextManager[str]:
    """A DSN of a server where the test user may CREATE DATABASE."""
    return _machine_or_embedded(5432, MACHINE_PG, EmbeddedPostgres, "ws-pg-")


def redis_server() -> contextlib.AbstractContextManager[str]:
    return _machine_or_embedded(6379, MACHINE_REDIS, EmbeddedRedis, "ws-redis-")


@contextmanager
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()
