"""The whole pipeline on this machine, as an operator would run it.

Used by ``waferstream demo`` and ``waferstream bench pipeline``: start the
embedded stack (only what is not configured), create topics, migrate the
database, start a local webhook inbox standing in for the FA team, and run
each service as its own ``waferstream run ...`` process. Leaving the context
sends SIGTERM to every service and waits for a clean exit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import asyncpg

from infra.db.migrate import migrate
from infra.inbox import WebhookInbox
from infra.kafka.admin import ensure_topics
from infra.settings import Settings
from infra.stack.manager import Stack

DEMO_RULES = Path(__file__).resolve().parent.parent / "compose" / "alert-rules.demo.yaml"
PIPELINE: tuple[tuple[str, ...], ...] = (("run", "inference"), ("run", "severity"), ("run", "alerts"))


class ServiceExited(RuntimeError):
    """A pipeline service stopped on its own; its log says why."""


class LocalPipeline:
    def __init__(
        self,
        services: Sequence[tuple[str, ...]] = PIPELINE,
        tag: str = "pipeline",
        topic_prefix: str | None = None,
    ) -> None:
        """``topic_prefix`` gives this pipeline its own topics and consumer groups
        on the shared development stack (the benchmark uses a fresh one per run)."""
        self.services = services
        self.tag = tag
        self.topic_prefix = topic_prefix
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> LocalPipeline:
        Stack(Settings()).up()
        self.settings = Settings().with_embedded()
        if self.topic_prefix is not None:
            self.settings = self.settings.model_copy(update={"topic_prefix": self.topic_prefix})
        self.dsn = self.settings.postgres.url.get_secret_value()
        ensure_topics(self.settings)
        asyncio.run(self._migrate())
        self.inbox = WebhookInbox(self.settings.data_dir / f"{self.tag}-inbox.jsonl").__enter__()
        env = {
            **os.environ,
            "WAFERSTREAM_OBSERVABILITY__LOG_FORMAT": "json",
            "WAFERSTREAM_ALERTS__RULES_FILE": os.environ.get(
                "WAFERSTREAM_ALERTS__RULES_FILE", str(DEMO_RULES)),
            "WAFERSTREAM_DEMO_WEBHOOK_URL": self.inbox.url,
            "WAFERSTREAM_TOPIC_PREFIX": self.settings.topic_prefix,
        }
        for n, args in enumerate(self.services):
            log = open(self._log(n, args), "ab")  # noqa: SIM115
            self.procs.append(subprocess.Popen([sys.executable, "-m", "infra", *args],
                                               stdout=log, stderr=subprocess.STDOUT, env=env))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.inbox.__exit__(exc_type, exc, tb)

    async def _migrate(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    def _log(self, n: int, args: tuple[str, ...]) -> Path:
        return self.settings.data_dir / f"{self.tag}-{n}-{'-'.join(args)}.log"

    def check_alive(self) -> None:
        for n, (args, proc) in enumerate(zip(self.services, self.procs, strict=True)):
            if proc.poll() is not None:
                raise ServiceExited(
                    f"`waferstream {' '.join(args)}` exited with {proc.returncode}; "
                    f"see {self._log(n, args)}")

    async def count(self, query: str, *args: object) -> int:
        conn = await asyncpg.connect(self.dsn)
        try:
            return int(await conn.fetchval(query, *args))
        finally:
            await conn.close()

    def wait_for(self, query: str, expected: int, timeout_s: float, *args: object) -> float:
        """Poll ``query`` until it counts ``expected``; returns the wall time it did.

        One connection for the whole wait: a new one per poll would fork a
        PostgreSQL backend 20 times a second, on the CPUs being measured.
        """
        return asyncio.run(self._wait_for(query, expected, timeout_s, *args))

    async def _wait_for(self, query: str, expected: int, timeout_s: float, *args: object) -> float:
        deadline = time.monotonic() + timeout_s
        conn = await asyncpg.connect(self.dsn)
        try:
            while time.monotonic() < deadline:
                if int(await conn.fetchval(query, *args)) >= expected:
                    return time.time()
                self.check_alive()
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
        raise TimeoutError(f"{query!r} did not reach {expected} within {timeout_s}s")
