"""Acceptance 6: migrations are idempotent; both object-store backends pass one contract."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from minio import Minio

from infra.db.migrate import discover, migrate
from infra.objectstore import ObjectNotFound, ObjectStore, object_key, open_object_store
from infra.objectstore.s3 import S3ObjectStore
from infra.settings import Settings
from schemas.errors import InvalidEvent


def test_migrations_twice_are_a_no_op(pg_dsn: str) -> None:
    async def run() -> tuple[list[str], list[str], int, int]:
        conn = await asyncpg.connect(pg_dsn)
        try:
            tables_before = await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema='public'")
            again = await migrate(conn)
            once_more = await migrate(conn)
            tables_after = await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema='public'")
            return again, once_more, tables_before, tables_after
        finally:
            await conn.close()

    again, once_more, before, after = asyncio.run(run())
    assert again == [] and once_more == []  # the fixture already migrated this database
    assert before == after >= 8


def test_concurrent_migrations_apply_each_file_once(pg_server: str, pg_dsn: str) -> None:
    async def run() -> list[list[str]]:
        conn = await asyncpg.connect(pg_dsn)
        await conn.execute("DROP TABLE schema_migrations, clusters, inference_results, "
                           "assessments, wafers, lot_state, lot_excursions, processed_events, "
                           "alert_attempts, alerts CASCADE")
        await conn.close()
        conns = [await asyncpg.connect(pg_dsn) for _ in range(3)]
        try:
            return list(await asyncio.gather(*(migrate(c) for c in conns)))
        finally:
            for c in conns:
                await c.close()

    results = asyncio.run(run())
    applied = [name for r in results for name in r]
    assert sorted(applied) == sorted(m.name for m in discover())


def test_editing_an_applied_migration_is_refused(pg_dsn: str, tmp_path: Path) -> None:
    for m in discover():
        (tmp_path / f"{m.name}.sql").write_text(m.sql)
    first = sorted(tmp_path.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")

    async def run() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await migrate(conn, tmp_path)
        finally:
            await conn.close()

    with pytest.raises(RuntimeError, match="changed after it was applied"):
        asyncio.run(run())


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        settings = Settings(object_store={"url": (tmp_path / "objs").as_uri()})
        yield open_object_store(settings)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        settings = Settings(object_store={
            "url": f"s3://bucket-{tmp_path.name[-8:].lower().replace('_', '-')}/pre",
            "endpoint": endpoint, "access_key": "test", "secret_key": "testtest",
        })
        yield open_object_store(settings)


def test_object_store_contract(store: ObjectStore) -> None:
    key = object_key("masks", "LOT1", "W01", filename="m.png")
    assert not store.exists(key)
    uri = store.put(key, b"\x89PNG data", "image/png")
    assert store.exists(key)
    assert store.get(key) == b"\x89PNG data"
    assert store.key_of(uri) == key
    store.put(key, b"v2")
    assert store.get(key) == b"v2"
    other = object_key("masks", "LOT1", "W02", filename="m.png")
    store.put(other, b"x")
    store.put(object_key("archive", "LOT1", filename="f.stdf"), b"y")
    assert store.list("masks/") == [key, other]
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting twice is fine
    with pytest.raises(ObjectNotFound):
        store.get(key)


def test_put_many_stores_every_object(store: ObjectStore) -> None:
    objects = [(object_key("masks", "LOT2", f"W{n:02d}", filename="m.png"), bytes([n]) * 50)
               for n in range(20)]
    store.put_many(objects[:10], "image/png")
    store.put_many([(k, b"old") for k, _ in objects[10:]])
    store.put_many(objects[10:])  # overwrites, like put
    assert store.list("masks/LOT2/") == sorted(k for k, _ in objects)
    assert all(store.get(key) == data for key, data in objects)
    with pytest.raises(ValueError):  # one bad key fails the call
        store.put_many([(object_key("masks", "LOT3", filename="ok.png"), b"x"), ("../x", b"y")])


@pytest.mark.parametrize("bad", ["../../etc", "..", "a/b", ".ssh"])
def test_object_keys_reject_path_traversal(store: ObjectStore, bad: str) -> None:
    with pytest.raises(InvalidEvent):
        object_key("archive", bad, filename="x.stdf")
    with pytest.raises(InvalidEvent):
        object_key("archive", "LOT1", filename=bad)
    if ".." in bad:  # the backends refuse traversal even when handed a raw key
        with pytest.raises(ValueError):
            store.put(f"archive/{bad}/x", b"no")
        assert not any("etc" in k for k in store.list())


def test_s3_store_is_really_s3(s3_endpoint: str) -> None:
    client = Minio(s3_endpoint, access_key="a", secret_key="b", secure=False)
    store = S3ObjectStore(client, "real-check")
    store.put("k/one", b"1")
    assert [o.object_name for o in client.list_objects("real-check", recursive=True)] == ["k/one"]
