"""Helpers to run pipeline services against the test servers and observe the results."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from infra.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess exactly these settings."""
    k = settings.kafka
    return {
        **os.environ,
        "WAFERSTREAM_ENVIRONMENT": settings.environment,
        "WAFERSTREAM_DATA_DIR": str(settings.data_dir),
        "WAFERSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "WAFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": k.bootstrap_servers,
        "WAFERSTREAM_KAFKA__BATCH_MAX_MESSAGES": str(k.batch_max_messages),
        "WAFERSTREAM_KAFKA__BATCH_MAX_WAIT_MS": str(k.batch_max_wait_ms),
        "WAFERSTREAM_KAFKA__COMMIT_INTERVAL_S": str(k.commit_interval_s),
        "WAFERSTREAM_POSTGRES__URL": settings.postgres.url.get_secret_value(),
        "WAFERSTREAM_REDIS__URL": settings.redis.url.get_secret_value(),
        "WAFERSTREAM_OBJECT_STORE__URL": settings.object_store.url,
        "WAFERSTREAM_OBSERVABILITY__LOG_FORMAT": "json",
        "WAFERSTREAM_MODEL__PATH": settings.model.path,
    }


def spawn_service(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = open(settings.data_dir / f"{'-'.join(args)}-{uuid.uuid4().hex[:6]}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "infra", *args], env=settings_env(settings),
        stdout=log, stderr=subprocess.STDOUT,
    )


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def fetchval(dsn: str, query: str, *args: Any) -> Any:
    async def _run() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    return asyncio.run(_run())


def read_topic(settings: Settings, topic: str, idle_s: float = 1.5) -> list[Message]:
    """Every record currently in ``topic``: assigned partitions from the start, no group."""
    consumer = Consumer({
        **settings.kafka.client_config(), "group.id": f"reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
    })
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    records: list[Message] = []
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                records.append(msg)
                last = time.monotonic()
    finally:
        consumer.close()
    return records


class InProcessService:
    """A real service entry point (``run_x(settings, stop=...)``) on a thread with its own
    event loop; leaving the block sets its stop event, as SIGTERM would."""

    def __init__(self, entry: Callable[..., Any], settings: Settings) -> None:
        self.entry = entry
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.entry(self.settings, stop=self.stop))
        except BaseException as exc:  # surfaced in __exit__
            self.error = exc

    def __enter__(self) -> InProcessService:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(60)
        assert not self.thread.is_alive(), "service did not stop on request"
        if self.error:
            raise self.error
