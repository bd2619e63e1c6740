"""Fixtures for the alert notifier tests: real PostgreSQL and Redis, local capture servers.

Why capture servers and not mocks: the channels' real HTTP and SMTP code must
run end to end; only the far side (Slack, MES, the mail relay) is replaced.
Each test gets a fresh PostgreSQL schema and Redis key prefix, so tests are
independent and leave nothing behind.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import numpy as np
import pytest
import redis
import redis.asyncio

from consumers.alerts import AlertConfig, AlertSubject, Notifier, RetryPolicy, parse_config
from consumers.alerts.delivery import DeadLetter
from tests.capture import HttpCapture, SmtpCapture
from ml.taxonomy import pattern_index

FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.02)


# ---------------------------------------------------------------- PostgreSQL / Redis


@pytest.fixture
def alerts_dsn(pg_dsn: str) -> str:
    """A fresh database migrated by the project's migration runner (alerts tables included)."""
    return pg_dsn


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"test:alerts:{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@dataclass
class Env:
    """Everything a test needs to build notifiers against the real servers."""

    dsn: str
    key_prefix: str
    redis_url: str
    dead_letters: list[DeadLetter] = field(default_factory=list)

    async def record_dead_letter(self, letter: DeadLetter) -> None:
        self.dead_letters.append(letter)

    @contextlib.asynccontextmanager
    async def notifier(
        self, config: AlertConfig, retry: RetryPolicy = FAST_RETRY
    ) -> AsyncIterator[Notifier]:
        """A notifier with its own pool and its own Redis connection."""
        pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
        client = redis.asyncio.Redis.from_url(self.redis_url)
        try:
            async with Notifier(
                config,
                pool,
                client,
                dead_letter=self.record_dead_letter,
                key_prefix=self.key_prefix,
                retry=retry,
            ) as notifier:
                yield notifier
        finally:
            await client.aclose()
            await pool.close()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()


@pytest.fixture
def env(alerts_dsn: str, key_prefix: str, redis_url: str) -> Env:
    return Env(alerts_dsn, key_prefix, redis_url)


# ---------------------------------------------------------------- domain helpers


def make_config(
    http: HttpCapture | None = None,
    smtp: SmtpCapture | None = None,
    *,
    rate_limit: dict[str, float] | None = None,
    **overrides: Any,
) -> AlertConfig:
    """Critical LOGIC wafers go to the FA group (mail + Slack) and the MES webhook."""
    channels: dict[str, Any] = {}
    group_channels: list[str] = []
    rule_channels: list[str] = []
    if smtp is not None:
        channels["fa-mail"] = {
            "type": "email",
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "none",
            "sender": "waferstream@fab.example",
        }
        group_channels.append("fa-mail")
    if http is not None:
        channels["fa-slack"] = {"type": "slack", "url": http.url("/slack/T000/B000/XXXX")}
        channels["mes"] = {"type": "webhook", "url": http.url("/mes"), "token": "tok-123"}
        group_channels.append("fa-slack")
        rule_channels.append("mes")
    data: dict[str, Any] = {
        "channels": channels,
        "groups": {"fa-logic": {"members": ["alice@fab.example"], "channels": group_channels}},
        "rules": [
            {
                "name": "logic-critical",
                "match": {"kinds": ["wafer"], "min_level": "critical", "products": ["LOGIC-*"]},
                "groups": ["fa-logic"],
                "channels": rule_channels,
            }
        ],
        "throttle": {
            "dedup_ttl_s": 60,
            "rate_limit": rate_limit or {"max_alerts": 100, "window_s": 60},
        },
        "links": {"wafer": "https://fa.example/wafer/{lot_id}/{wafer_id}"},
    }
    data.update(overrides)
    return parse_config(data, env={})


def wafer_grid(size: int = 26) -> tuple[np.ndarray, np.ndarray]:
    """A round wafer with a diagonal scratch of failing dies labelled Scratch."""
    yy, xx = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    dies = np.where((yy - centre) ** 2 + (xx - centre) ** 2 <= centre**2, 1, 0).astype(np.uint8)
    labels = np.zeros_like(dies)
    for i in range(4, size - 4):
        dies[i, i] = 2
        labels[i, i] = pattern_index("Scratch")
    return dies, labels


def make_subject(
    *,
    event_id: str | None = None,
    lot_id: str = "LOT042",
    wafer_id: str = "07",
    level: str = "critical",
    score: float = 92.0,
    product: str = "LOGIC-A7",
) -> AlertSubject:
    dies, labels = wafer_grid()
    # A plain dict, as the Avro decoder hands it over.
    return AlertSubject.model_validate(
        {
            "kind": "wafer",
            "event_id": event_id or f"evt-{uuid.uuid4().hex[:8]}",
            "lot_id": lot_id,
            "wafer_id": wafer_id,
            "product": product,
            "tester": "T9-01",
            "severity_score": score,
            "severity_level": level,
            "dominant_pattern": "Scratch",
            "patterns": ["Scratch", "Random"],
            "top_clusters": [{"pattern": "Scratch", "die_count": 18, "centroid_mm": [1.5, -2.0]}],
            "occurred_at": datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
            "dies": dies,
            "die_labels": labels,
        }
    )
