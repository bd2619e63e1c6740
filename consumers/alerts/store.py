"""The alert ledger in PostgreSQL (tables from ``infra/migrations/0002_alerts.sql``).

Why the database decides idempotency: Redis keys expire and can be flushed,
but the ``UNIQUE (event_id, rule, channel, recipient)`` constraint is durable.
:meth:`AlertStore.create` returns ``None`` for an already-known alert, and
only the caller that got an id may deliver it — so concurrent notifier
instances and Kafka replays can never double-send.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal, NamedTuple

import asyncpg
from pydantic import BaseModel

from consumers.alerts.rules import Target
from consumers.alerts.subject import AlertSubject

AlertStatus = Literal["pending", "delivered", "failed", "suppressed", "digested"]
STATUSES: tuple[AlertStatus, ...] = ("pending", "delivered", "failed", "suppressed", "digested")

_COLUMNS = (
    "id, event_id, rule, channel, recipient, lot_id, wafer_id, severity, status, reason, "
    "created_at, delivered_at, acked_at, acked_by"
)


class AlertRow(BaseModel):
    """One row of ``alerts``."""

    id: int
    event_id: str
    rule: str
    channel: str
    recipient: str
    lot_id: str
    wafer_id: str | None
    severity: str
    status: AlertStatus
    reason: str | None
    created_at: datetime
    delivered_at: datetime | None
    acked_at: datetime | None
    acked_by: str | None


class AlertDecision(NamedTuple):
    """The identity and current decision of one alert."""

    id: int
    status: AlertStatus
    reason: str | None


class AlertStore:
    """Reads and writes alert rows and delivery attempts through an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, subject: AlertSubject, target: Target) -> AlertDecision:
        """This event's alert for ``target`` (id, status, reason), inserting it if new.

        A new row is ``pending``. An existing row keeps its status: final
        (delivered, failed, suppressed, digested) for a replay of an event
        whose alerts were all decided, ``pending`` for one whose attempt died
        before finishing (the consumer commits an event only after its
        alerts are final); the caller resumes such an alert under the same id.
        """
        row = await self._pool.fetchrow(
            """
            WITH inserted AS (
                INSERT INTO alerts (event_id, rule, channel, recipient, lot_id, wafer_id, severity)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT ON CONSTRAINT alerts_event_target_key DO NOTHING
                RETURNING id, status, reason)
            SELECT id, status, reason FROM inserted
            UNION ALL
            SELECT id, status, reason FROM alerts
             WHERE event_id = $1 AND rule = $2 AND channel = $3 AND recipient = $4
            LIMIT 1
            """,
            subject.event_id,
            target.rule,
            target.channel,
            target.recipient,
            subject.lot_id,
            subject.wafer_id,
            subject.severity_level.value,
        )
        if row is None:
            # A concurrent insert of the same alert won the conflict after this
            # statement's snapshot was taken; a new statement sees its row.
            row = await self._pool.fetchrow(
                "SELECT id, status, reason FROM alerts "
                "WHERE event_id = $1 AND rule = $2 AND channel = $3 AND recipient = $4",
                subject.event_id, target.rule, target.channel, target.recipient,
            )
        return AlertDecision(int(row["id"]), row["status"], row["reason"])

    async def status(self, alert_id: int) -> AlertStatus:
        status: AlertStatus = await self._pool.fetchval(
            "SELECT status FROM alerts WHERE id = $1", alert_id
        )
        return status

    async def set_status(
        self,
        ids: Sequence[int],
        status: AlertStatus,
        reason: str | None = None,
        *,
        delivered: bool = False,
        only_from: AlertStatus | None = None,
    ) -> None:
        """Move alerts to ``status``; ``delivered`` also stamps ``delivered_at``.

        ``only_from`` guards a transition that may race with another instance
        (a digest flushed between queueing an alert and marking it).
        """
        await self._pool.execute(
            """
            UPDATE alerts
               SET status = $2, reason = COALESCE($3, reason),
                   delivered_at = CASE WHEN $4 THEN now() ELSE delivered_at END
             WHERE id = ANY($1::bigint[]) AND ($5::text IS NULL OR status = $5)
            """,
            list(ids),
            status,
            reason,
            delivered,
            only_from,
        )

    async def record_attempt(
        self, ids: Sequence[int], attempt: int, error: str | None = None
    ) -> None:
        """Log one delivery attempt (``error`` None = success) for each alert it carried."""
        await self._pool.executemany(
            "INSERT INTO alert_attempts (alert_id, attempt, ok, error) VALUES ($1, $2, $3, $4)",
            [(alert_id, attempt, error is None, error) for alert_id in ids],
        )

    async def query(
        self, *, status: AlertStatus | None = None, lot_id: str | None = None, limit: int = 50
    ) -> list[AlertRow]:
        """Newest alerts first (by id: ``created_at`` is each transaction's start, so rows
        written concurrently can carry out-of-order times), optionally filtered."""
        rows = await self._pool.fetch(
            f"""
            SELECT {_COLUMNS} FROM alerts
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR lot_id = $2)
             ORDER BY id DESC
             LIMIT $3
            """,
            status,
            lot_id,
            limit,
        )
        return [AlertRow(**dict(r)) for r in rows]

    async def ack(self, alert_id: int, by: str) -> AlertRow | None:
        """Acknowledge an alert; the first acknowledgement wins. ``None`` if no such alert."""
        row = await self._pool.fetchrow(
            f"""
            UPDATE alerts
               SET acked_at = COALESCE(acked_at, now()), acked_by = COALESCE(acked_by, $2)
             WHERE id = $1
            RETURNING {_COLUMNS}
            """,
            alert_id,
            by,
        )
        return AlertRow(**dict(row)) if row else None
