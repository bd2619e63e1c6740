"""Session-wide real servers and per-test isolation.

Each test gets its own topic prefix (so its own topics and consumer groups on
the shared broker), its own freshly migrated PostgreSQL database and its own
data directory; nothing leaks between tests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from infra.db.migrate import migrate
from infra.settings import Settings
from tests import servers
from tests.capture import http_capture, smtp_capture  # noqa: F401 - fixtures for every suite


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with servers.broker() as address:
        yield address


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    with servers.postgres() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with servers.redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with servers.s3_server() as endpoint:
        yield endpoint


def _replace_db(dsn: str, name: str) -> str:
    return dsn.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    """A fresh, migrated database for this test, dropped afterwards."""
    name = f"ws_{uuid.uuid4().hex[:12]}"

    async def _create() -> None:
        admin = await asyncpg.connect(pg_server)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        conn = await asyncpg.connect(_replace_db(pg_server, name))
        await migrate(conn)
        await conn.close()

    async def _drop() -> None:
        admin = await asyncpg.connect(pg_server)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    asyncio.run(_create())
    yield _replace_db(pg_server, name)
    asyncio.run(_drop())


@pytest.fixture
def settings(
    kafka_bootstrap: str, pg_dsn: str, redis_url: str, tmp_path: Path
) -> Settings:
    """Settings pointing at the real test servers, isolated by a unique topic prefix."""
    return Settings(
        environment="test",
        data_dir=tmp_path / "data",
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        kafka={"bootstrap_servers": kafka_bootstrap, "batch_max_wait_ms": 50,
               "commit_interval_s": 0.2},
        postgres={"url": pg_dsn},
        redis={"url": redis_url},
        object_store={"url": (tmp_path / "objects").as_uri()},
        retry={"initial_s": 0.1, "max_s": 0.5},
    )
