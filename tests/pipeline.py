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
from schemas.topics import TopicSpec
from schemas.wire import shared_codec


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


def spawn_service(
    settings: Settings, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``python -m infra *args`` with ``settings`` (plus ``extra_env``), logging to its own
    file ``<args>-<random>.log`` in ``settings.data_dir`` (so each life of a restarted
    service can be read; see :func:`service_logs`)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = open(settings.data_dir / f"{'-'.join(args)}-{uuid.uuid4().hex[:6]}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "infra", *args], env={**settings_env(settings), **(extra_env or {})},
        stdout=log, stderr=subprocess.STDOUT,
    )


def service_logs(settings: Settings, *args: str, needles: tuple[str, ...] = (), chars: int = 3000
                 ) -> str:
    """For failure messages: the logs of every process spawned with ``args``, only the
    lines that mention one of ``needles`` when given, else each log's tail."""
    parts = []
    for path in sorted(settings.data_dir.glob(f"{'-'.join(args)}-*.log")):
        text = path.read_text(errors="replace")
        if needles:
            text = "\n".join(line for line in text.splitlines()
                             if any(needle in line for needle in needles))
        parts.append(f"--- {path.name}\n{text[-chars:]}")
    return "\n".join(parts)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def fetch(dsn: str, query: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of ``query`` as dicts."""
    async def _run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(_run())


def fetchval(dsn: str, query: str, *args: Any) -> Any:
    async def _run() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    return asyncio.run(_run())


def read_topics(settings: Settings, topics: list[str], idle_s: float = 1.5) -> list[Message]:
    """Every record now in ``topics``, read from the start without a group until idle.

    Not from watermarks: the development broker (tansu) reports a high watermark
    that is too low when records arrive in batches (README, "Development broker
    caveats"); reading is the only exact count there.
    """
    consumer = Consumer({
        **settings.kafka.client_config(), "group.id": f"reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        # tansu holds an empty partition's fetch for the full wait, which would
        # otherwise eat the idle window before a partition with records answers.
        "fetch.wait.max.ms": 50,
    })
    try:
        assignment = []
        for topic in topics:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        consumer.assign(assignment)
        records: list[Message] = []
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                records.append(msg)
                last = time.monotonic()
        return records
    finally:
        consumer.close()


def read_topic(settings: Settings, topic: str, idle_s: float = 1.5) -> list[Message]:
    """Every record currently in ``topic`` (see :func:`read_topics`)."""
    return read_topics(settings, [topic], idle_s)


def decode_topic(settings: Settings, spec: TopicSpec) -> list[dict[str, Any]]:
    """The events on a catalog topic, decoded as its event type."""
    assert spec.event_type, f"{spec.name} carries no events"
    codec = shared_codec()
    return [codec.decode(m.value(), spec.event_type)
            for m in read_topic(settings, settings.topic(spec.name))]


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
