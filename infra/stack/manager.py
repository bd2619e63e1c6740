"""``waferstream stack up|down|status``: start only what is not configured."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from infra.settings import Settings
from infra.stack.components import Broker, EmbeddedPostgres, EmbeddedRedis

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    embedded: bool
    healthy: bool | None  # None: configured externally, not checked here


class Stack:
    """The embedded components for one data directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.data_dir.resolve()
        stack = settings.stack
        self.broker = Broker(self.root, stack.kafka_port, stack.broker_storage)
        self.postgres = EmbeddedPostgres(self.root, stack.postgres_port)
        self.redis = EmbeddedRedis(self.root, stack.redis_port)

    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

    def up(self) -> dict[str, Any]:
        """Start every unconfigured component and record their addresses."""
        self.root.mkdir(parents=True, exist_ok=True)
        s = self.settings
        state: dict[str, Any] = {}
        if not s.kafka.bootstrap_servers:
            state["kafka"] = self.broker.start()
        if not s.postgres.url.get_secret_value():
            state["postgres"] = self.postgres.start()
        if not s.redis.url.get_secret_value():
            state["redis"] = self.redis.start()
        if not s.object_store.url:
            objects = self.root / "objects"
            objects.mkdir(exist_ok=True)
            state["object_store"] = objects.as_uri()
        self.state_file.write_text(json.dumps(state, indent=2))
        log.info("stack up", **state)
        return state

    def down(self) -> list[str]:
        """Stop every embedded component that runs; returns what was stopped."""
        stopped = [
            name
            for name, component in (
                ("kafka", self.broker), ("postgres", self.postgres), ("redis", self.redis)
            )
            if component.stop()
        ]
        self.state_file.unlink(missing_ok=True)
        log.info("stack down", stopped=stopped)
        return stopped

    def pids(self) -> dict[str, int]:
        """Process ids of the embedded components that run now (for CPU accounting)."""
        running = (
            (name, component.pid)
            for name, component in (
                ("kafka", self.broker), ("postgres", self.postgres), ("redis", self.redis)
            )
        )
        return {name: pid for name, pid in running if pid is not None}

    def status(self) -> list[ComponentStatus]:
        """Health of each component, embedded or configured."""
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        result = []
        for name, component in (
            ("kafka", self.broker), ("postgres", self.postgres), ("redis", self.redis)
        ):
            if name in state:
                result.append(ComponentStatus(name, state[name], True, component.healthy()))
            else:
                result.append(ComponentStatus(name, "configured externally", False, None))
        return result
