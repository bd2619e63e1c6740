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
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pydantic import SecretStr

from infra.db.migrate import migrate
from infra.inbox import WebhookInbox
from infra.kafka.admin import delete_topics, ensure_topics
from infra.settings import Settings
from infra.stack.manager import Stack

DEMO_RULES = Path(__file__).resolve().parent.parent / "compose" / "alert-rules.demo.yaml"
T = TypeVar("T")
PIPELINE: tuple[tuple[str, ...], ...] = (("run", "inference"), ("run", "severity"), ("run", "alerts"))


class ServiceExited(RuntimeError):
    """A pipeline service stopped on its own; its log says why."""


class LocalPipeline:
    def __init__(
        self,
        services: Sequence[tuple[str, ...]] = PIPELINE,
        tag: str = "pipeline",
        isolate_as: str | None = None,
    ) -> None:
        """``isolate_as`` (an identifier) gives this pipeline its own topics, consumer
        groups and database on the shared development stack; the topics and the
        database are dropped on exit. The benchmark uses a fresh set per run, so a
        rerun inherits no groups, backlog or table bloat from the last one, and
        the broker does not carry every earlier run's records (the development
        broker's CPU per wafer doubled over a day of runs that left them)."""
        self.services = services
        self.tag = tag
        self.isolate_as = isolate_as
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> LocalPipeline:
        self.stack = Stack(Settings())
        self._embedded = set(self.stack.up())
        self.settings = Settings().with_embedded()
        if self.isolate_as is not None:
            self.settings = self._isolate(self.isolate_as)
        self.dsn = self.settings.postgres.url.get_secret_value()
        ensure_topics(self.settings)
        _on_connection(self.dsn, migrate)
        self.inbox = WebhookInbox(self.settings.data_dir / f"{self.tag}-inbox.jsonl").__enter__()
        env = {
            **os.environ,
            "WAFERSTREAM_OBSERVABILITY__LOG_FORMAT": "json",
            "WAFERSTREAM_ALERTS__RULES_FILE": os.environ.get(
                "WAFERSTREAM_ALERTS__RULES_FILE", str(DEMO_RULES)),
            "WAFERSTREAM_DEMO_WEBHOOK_URL": self.inbox.url,
            "WAFERSTREAM_TOPIC_PREFIX": self.settings.topic_prefix,
            "WAFERSTREAM_POSTGRES__URL": self.dsn,
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
        if self.isolate_as is not None:
            self._drop_database(self.isolate_as)
            delete_topics(self.settings)

    def _isolate(self, name: str) -> Settings:
        """Create database ``name`` beside the stack's and point the settings at it."""
        stack_dsn = self.settings.postgres.url.get_secret_value()
        _on_connection(stack_dsn, lambda conn: conn.execute(f'CREATE DATABASE "{name}"'))
        url = urlunsplit(urlsplit(stack_dsn)._replace(path=f"/{name}"))
        return self.settings.model_copy(update={
            "topic_prefix": f"{name}.",
            "postgres": self.settings.postgres.model_copy(update={"url": SecretStr(url)}),
        })

    def _drop_database(self, name: str) -> None:
        admin = urlunsplit(urlsplit(self.dsn)._replace(path="/postgres"))
        _on_connection(admin, lambda conn: conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def _log(self, n: int, args: tuple[str, ...]) -> Path:
        return self.settings.data_dir / f"{self.tag}-{n}-{'-'.join(args)}.log"

    def component_pids(self) -> dict[str, int]:
        """Top process id per service (``inference``, ``inference-2``, ...) and embedded server."""
        pids: dict[str, int] = {}
        for args, proc in zip(self.services, self.procs, strict=True):
            name, n = args[-1], 2
            while name in pids:
                name, n = f"{args[-1]}-{n}", n + 1
            pids[name] = proc.pid
        embedded = {k: v for k, v in self.stack.pids().items() if k in self._embedded}
        return pids | embedded

    def check_alive(self) -> None:
        for n, (args, proc) in enumerate(zip(self.services, self.procs, strict=True)):
            if proc.poll() is not None:
                raise ServiceExited(
                    f"`waferstream {' '.join(args)}` exited with {proc.returncode}; "
                    f"see {self._log(n, args)}")

    def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        """Rows of ``query`` on the pipeline's database (one short-lived connection)."""
        return list(_on_connection(self.dsn, lambda conn: conn.fetch(query, *args)))

    def count(self, query: str, *args: object) -> int:
        return int(self.fetch(query, *args)[0][0])

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


def _on_connection(dsn: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``work`` on one short-lived connection to ``dsn`` (the pipeline's callers are sync)."""

    async def run() -> T:
        conn = await asyncpg.connect(dsn)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())
