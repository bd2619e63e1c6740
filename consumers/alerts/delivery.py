"""Getting one message through a flaky channel, and recording every try.

Why capped exponential backoff with full jitter: after an outage of a
webhook or mail relay, several notifier instances retrying in lock-step would
hammer it the moment it recovers; random delays in ``[0, min(cap, base·2^n)]``
spread them out. Why a dead-letter callback: after the last attempt the alert
must not vanish — it is handed over (to a Kafka DLQ in production) and its
row says ``failed`` with the reason.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from consumers.alerts import metrics
from consumers.alerts.channels import Channel, DeliveryError, Message
from consumers.alerts.rules import RetrySettings
from consumers.alerts.store import AlertStatus, AlertStore

log = structlog.get_logger(__name__)


async def _send(channel: Channel, message: Message, recipient: str) -> None:
    """Call the channel, turning unexpected exceptions into retryable failures.

    Only the exception type is kept: an unforeseen error text might quote a
    URL or credential, and a bug in one channel must not leave a row pending.
    """
    try:
        await channel.send(message, recipient)
    except DeliveryError:
        raise
    except Exception as exc:  # noqa: BLE001 - see docstring
        log.error("alert.channel_bug", channel=channel.name, error_type=type(exc).__name__)
        raise DeliveryError(f"unexpected {type(exc).__name__} in channel {channel.name}") from None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry; tests use tiny delays."""

    max_attempts: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> RetryPolicy:
        return cls(settings.max_attempts, settings.base_delay_s, settings.max_delay_s)

    def delay_s(self, failed_attempt: int, rng: random.Random) -> float:
        """Full-jitter delay before the attempt after ``failed_attempt`` (1-based)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (failed_attempt - 1))
        return rng.uniform(0.0, ceiling)


@dataclass(frozen=True)
class DeadLetter:
    """An undeliverable message: enough to re-send it or to investigate."""

    alert_ids: tuple[int, ...]
    channel: str
    recipient: str
    reason: str
    payload: dict[str, Any]


DeadLetterHandler = Callable[[DeadLetter], Awaitable[None]]


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    attempts: int
    reason: str | None = None


class Deliverer:
    """Sends with retries, writes ``alert_attempts`` rows and the final status."""

    def __init__(
        self,
        store: AlertStore,
        policy: RetryPolicy,
        dead_letter: DeadLetterHandler | None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._policy = policy
        self._dead_letter = dead_letter
        self._rng = rng or random.Random()

    async def deliver(
        self,
        channel: Channel,
        recipient: str,
        message: Message,
        alert_ids: Sequence[int],
        *,
        success_status: AlertStatus = "delivered",
    ) -> DeliveryResult:
        """Try up to ``max_attempts`` times; on give-up, dead-letter and mark ``failed``."""
        bound = log.bind(channel=channel.name, recipient=recipient, alert_ids=list(alert_ids))
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                await _send(channel, message, recipient)
            except DeliveryError as exc:
                await self._store.record_attempt(alert_ids, attempt, exc.reason)
                bound.warning("alert.attempt_failed", attempt=attempt, error=exc.reason)
                if not exc.retryable:
                    reason = f"permanent failure after {attempt} attempt(s): {exc.reason}"
                    break
                if attempt >= self._policy.max_attempts:
                    reason = f"gave up after {attempt} attempt(s): {exc.reason}"
                    break
                await asyncio.sleep(self._policy.delay_s(attempt, self._rng))
                continue
            await self._store.record_attempt(alert_ids, attempt)
            await self._store.set_status(alert_ids, success_status, delivered=True)
            metrics.ALERTS_SENT.labels(channel=channel.name).inc()
            metrics.DELIVERY_LATENCY.labels(channel=channel.name).observe(
                time.perf_counter() - started
            )
            bound.info("alert.delivered", attempts=attempt)
            return DeliveryResult(ok=True, attempts=attempt)
        await self.give_up(channel.name, recipient, message.payload, alert_ids, reason)
        return DeliveryResult(ok=False, attempts=attempt, reason=reason)

    async def give_up(
        self,
        channel: str,
        recipient: str,
        payload: dict[str, Any],
        alert_ids: Sequence[int],
        reason: str,
    ) -> None:
        """Mark alerts ``failed`` and hand them to the dead-letter callback.

        The row is written first: if the callback itself fails, the database
        still says what was not delivered and why (nothing is silently lost).
        """
        await self._store.set_status(alert_ids, "failed", reason)
        metrics.DELIVERY_FAILURES.labels(channel=channel).inc()
        log.error(
            "alert.dead_lettered",
            channel=channel,
            recipient=recipient,
            alert_ids=list(alert_ids),
            reason=reason,
        )
        if self._dead_letter is None:
            return
        try:
            await self._dead_letter(
                DeadLetter(tuple(alert_ids), channel, recipient, reason, payload)
            )
        except Exception as exc:  # noqa: BLE001 - the row already records the failure
            log.error(
                "alert.dead_letter_failed",
                alert_ids=list(alert_ids),
                error=f"{type(exc).__name__}: {exc}",
            )
