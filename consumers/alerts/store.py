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
from typing import Literal

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


class AlertStore:
    """Reads and writes alert rows and delivery attempts through an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, subject: AlertSubject, target: Target) -> int | None:
        """The id of this event's ``pending`` alert for ``target``, inserting it if new.

        ``None`` when the event already alerted this target to a final status
        (delivered, failed, suppressed, digested): a replay changes nothing. A
        row still ``pending`` belongs to an attempt that died before finishing
        (the consumer only commits an event after its alerts are final), so
        its id is returned and the alert is sent again under the same id,
        which receivers can use to drop a duplicate.
        """
        return await self._pool.fetchval(
            """
            WITH inserted AS (
                INSERT INTO alerts (event_id, rule, channel, recipient, lot_id, wafer_id, severity)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT ON CONSTRAINT alerts_event_target_key DO NOTHING
                RETURNING id)
            SELECT id FROM inserted
            UNION ALL
            SELECT id FROM alerts
             WHERE event_id = $1 AND rule = $2 AND channel = $3 AND recipient = $4
               AND status = 'pending'
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

    async def is_pending(self, alert_id: int) -> bool:
        return bool(await self._pool.fetchval(
            "SELECT status = 'pending' FROM alerts WHERE id = $1", alert_id
        ))

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
