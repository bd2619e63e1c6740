"""Real servers for the test suite: a Kafka-protocol broker, PostgreSQL, Redis, S3.

The broker (tansu) always starts here. PostgreSQL and Redis are the
machine's own when they answer on their standard ports (as in CI), and the
embedded ones from the project's dependencies otherwise, so ``make test``
works on a bare machine too. S3 is a local moto server.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.stack.components import Broker, EmbeddedPostgres, EmbeddedRedis
from infra.stack.processes import wait_for_port

MACHINE_PG = "postgresql://postgres@127.0.0.1:5432/test"
MACHINE_REDIS = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
def postgres() -> Iterator[str]:
    """A DSN of a server where the test user may CREATE DATABASE."""
    if _answers(5432):
        yield MACHINE_PG
        return
    component = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="ws-pg-")), free_port())
    url = component.start()
    try:
        yield url
    finally:
        component.stop()


@contextmanager
def redis_server() -> Iterator[str]:
    if _answers(6379):
        yield MACHINE_REDIS
        return
    component = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="ws-redis-")), free_port())
    url = component.start()
    try:
        yield url
    finally:
        component.stop()


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
