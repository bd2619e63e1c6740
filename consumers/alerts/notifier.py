"""The notifier facade: one call per event, everything else behind it.

For each (rule, channel, recipient) an event matches, :meth:`Notifier.handle`
runs the same pipeline::

    insert alert row ── conflict ──> "duplicate"   (replayed event: nothing sent)
         │
    dedup claim ─── taken ────────> "suppressed"  (same wafer+rule within TTL)
         │
    rate window ─── over limit ───> "digested"    (queued; sent by flush_digests)
         │
    deliver with retries ─────────> "delivered" | "failed" (+ dead letter)

The order matters: the database insert comes first because it is the durable
guard against double delivery across instances and replays; Redis then only
decides *whether* and *how* a new alert is sent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import asyncpg
import httpx
import numpy as np
import structlog
from redis.asyncio import Redis

from consumers.alerts import metrics
from consumers.alerts.channels import Channel, build_channels
from consumers.alerts.delivery import DeadLetterHandler, Deliverer, RetryPolicy
from consumers.alerts.message import (
    build_link,
    compose_alert,
    compose_digest,
    digest_item,
    title_lines,
)
from consumers.alerts.rules import AlertConfig, Target
from consumers.alerts.store import AlertStatus, AlertStore
from consumers.alerts.subject import AlertSubject
from consumers.alerts.throttle import Throttle
from ml.render import render_wafer_png

log = structlog.get_logger(__name__)

OutcomeStatus = Literal["delivered", "failed", "suppressed", "digested", "duplicate"]


@dataclass(frozen=True)
class AlertOutcome:
    """What happened to one target of one event."""

    rule: str
    channel: str
    recipient: str
    status: OutcomeStatus
    alert_id: int | None
    reason: str | None = None
    #: For a duplicate: the status the alert already has, so that a replay
    #: can announce it again (a crash may have lost the first announcement).
    final_status: AlertStatus | None = None


@dataclass(frozen=True)
class DigestOutcome:
    """What happened to one flushed digest."""

    channel: str
    recipient: str
    alert_ids: tuple[int, ...]
    ok: bool
    reason: str | None = None


async def _render(subject: AlertSubject, dies: np.ndarray) -> bytes | None:
    """The PNG map, or None: a picture that cannot be drawn must not stop the alert."""
    try:
        return await asyncio.to_thread(
            render_wafer_png, dies, subject.die_labels, title_lines(subject)
        )
    except Exception:  # the alert text alone is still worth sending
        log.exception("alert.render_failed", event_id=subject.event_id)
        return None


#: How often a replay checks whether another instance's lease on an alert ended.
_LEASE_POLL_S = 0.2


def _picture(subject: AlertSubject) -> Callable[[], Awaitable[bytes | None]]:
    """Render the wafer map at most once per event, and only if some target needs it."""
    task: asyncio.Future[bytes | None] | None = None

    async def get() -> bytes | None:
        nonlocal task
        if subject.dies is None:
            return None
        if task is None:
            task = asyncio.ensure_future(_render(subject, subject.dies))
        return await task

    return get


class Notifier:
    """Evaluates rules for events and delivers alerts; safe to run as many instances.

    ``pool`` must reach a database with the 0002_alerts tables on its search
    path; ``redis`` is this instance's own connection. Instances sharing a
    ``key_prefix`` (and database) share dedup, rate limits and digests.
    """

    def __init__(
        self,
        config: AlertConfig,
        pool: asyncpg.Pool,
        redis: Redis,
        *,
        dead_letter: DeadLetterHandler | None = None,
        key_prefix: str = "waferstream:alerts",
        retry: RetryPolicy | None = None,
    ) -> None:
        self._config = config
        self._store = AlertStore(pool)
        self._throttle = Throttle(redis, config.throttle, key_prefix)
        self._http = httpx.AsyncClient(follow_redirects=False)
        self._channels: dict[str, Channel] = build_channels(config.channels, self._http)
        self._deliverer = Deliverer(
            self._store, retry or RetryPolicy.from_settings(config.retry), dead_letter
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close channel connections (the pool and Redis belong to the caller)."""
        for channel in self._channels.values():
            await channel.aclose()
        await self._http.aclose()

    def routes(self, subject: AlertSubject) -> bool:
        """Whether any rule matches ``subject`` (rules never look at die labels)."""
        return bool(self._config.targets(subject))

    async def handle(self, subject: AlertSubject) -> list[AlertOutcome]:
        """Alert every target ``subject`` matches; returns one outcome per target."""
        targets = self._config.targets(subject)
        if not targets:
            log.debug("alert.no_rule_matched", event_id=subject.event_id)
            return []
        picture = _picture(subject)
        return list(
            await asyncio.gather(*(self._handle_target(subject, t, picture) for t in targets))
        )

    async def _handle_target(
        self,
        subject: AlertSubject,
        target: Target,
        picture: Callable[[], Awaitable[bytes | None]],
    ) -> AlertOutcome:
        def outcome(
            status: OutcomeStatus, alert_id: int | None, reason: str | None = None
        ) -> AlertOutcome:
            return AlertOutcome(
                target.rule, target.channel, target.recipient, status, alert_id, reason
            )

        bound = log.bind(
            event_id=subject.event_id,
            rule=target.rule,
            channel=target.channel,
            recipient=target.recipient,
        )
        row = await self._store.create(subject, target)
        alert_id, status = row.id, row.status
        token = uuid.uuid4().hex
        if status == "pending":
            status = await self._own(alert_id, token, bound)
        if status != "pending":
            metrics.ALERTS_SUPPRESSED.labels(reason="replay").inc()
            bound.info("alert.replay_ignored", alert_id=alert_id, status=status)
            reason = row.reason if row.status == status else None
            return AlertOutcome(
                target.rule, target.channel, target.recipient, "duplicate", alert_id, reason,
                final_status=status,
            )
        try:
            return await self._decide_and_send(subject, target, alert_id, picture, bound, outcome)
        finally:
            await self._throttle.end_lease(alert_id, token)

    async def _own(self, alert_id: int, token: str, bound: Any) -> AlertStatus:
        """Lease a pending alert: ``pending`` when it is ours to send, else its final status
        (another instance finished it meanwhile).

        A lease held elsewhere is waited out: either its holder finishes the
        alert, or it crashed and the lease lapses, and then this replay sends it.
        """
        waited = False
        while True:
            if await self._throttle.lease(alert_id, token):
                status = await self._store.status(alert_id)
                if status == "pending":
                    if waited:
                        bound.info("alert.resumed", alert_id=alert_id)
                    return status
                await self._throttle.end_lease(alert_id, token)
                return status
            status = await self._store.status(alert_id)
            if status != "pending":
                return status
            if not waited:
                bound.info("alert.waiting_for_lease", alert_id=alert_id)
                waited = True
            await asyncio.sleep(_LEASE_POLL_S)

    async def _decide_and_send(
        self,
        subject: AlertSubject,
        target: Target,
        alert_id: int,
        picture: Callable[[], Awaitable[bytes | None]],
        bound: Any,
        outcome: Callable[..., AlertOutcome],
    ) -> AlertOutcome:
        """Dedup, rate limit or digest, then deliver: the alert is leased to this call."""
        if not await self._throttle.claim(subject, target, alert_id):
            reason = (
                f"duplicate: {subject.wafer_key} already alerted by this rule within "
                f"{self._config.throttle.dedup_ttl_s:g} s"
            )
            await self._store.set_status([alert_id], "suppressed", reason)
            metrics.ALERTS_SUPPRESSED.labels(reason="dedup").inc()
            bound.info("alert.suppressed", alert_id=alert_id, reason=reason)
            return outcome("suppressed", alert_id, reason)

        link = build_link(self._config.links, subject)
        item = digest_item(subject, rule=target.rule, alert_id=alert_id, link=link)
        if not await self._throttle.admit(target, item):
            reason = "rate limit exceeded: held for the next digest"
            await self._store.set_status([alert_id], "digested", reason, only_from="pending")
            metrics.ALERTS_SUPPRESSED.labels(reason="rate_limit").inc()
            bound.info("alert.digested", alert_id=alert_id)
            return outcome("digested", alert_id, reason)

        channel = self._channels[target.channel]
        png = await picture() if channel.per_member else None
        message = compose_alert(subject, rule=target.rule, alert_id=alert_id, link=link, png=png)
        result = await self._deliverer.deliver(channel, target.recipient, message, [alert_id])
        if not result.ok:
            await self._throttle.release(subject, target)
            return outcome("failed", alert_id, result.reason)
        return outcome("delivered", alert_id)

    async def flush_digests(self) -> list[DigestOutcome]:
        """Send one digest per (channel, recipient) whose rate window has closed.

        Call periodically (every few seconds); any instance may call it, each
        digest is taken by exactly one caller.
        """
        digests = await self._throttle.take_due_digests()
        return list(
            await asyncio.gather(
                *(self._send_digest(d.channel, d.recipient, d.items) for d in digests)
            )
        )

    async def _send_digest(
        self, channel_name: str, recipient: str, items: list[dict[str, Any]]
    ) -> DigestOutcome:
        ids = tuple(int(i["alert_id"]) for i in items)
        message = compose_digest(items)
        channel = self._channels.get(channel_name)
        if channel is None:
            reason = f"channel {channel_name!r} no longer configured"
            await self._deliverer.give_up(channel_name, recipient, message.payload, ids, reason)
            return DigestOutcome(channel_name, recipient, ids, False, reason)
        result = await self._deliverer.deliver(
            channel, recipient, message, ids, success_status="digested"
        )
        return DigestOutcome(channel_name, recipient, ids, result.ok, result.reason)
