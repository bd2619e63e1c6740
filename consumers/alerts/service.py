"""The alert notifier as a Kafka service: assessed wafers and lot excursions in.

Each record becomes an :class:`AlertSubject` (the wafer picture comes from the
die map carried in the event and the die-level mask in the object store) and
goes through :meth:`Notifier.handle`, which is idempotent on replays. Every
final outcome is published as an ``AlertNotification`` event with a
deterministic id; an alert that could not be delivered after its retries is
also written to ``alert.notifications.dlq`` with the reason. A background
task flushes digests on an interval.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np
import structlog
from confluent_kafka import Message

from consumers.alerts.delivery import DeadLetter, DeadLetterHandler
from consumers.alerts.notifier import AlertOutcome, Notifier
from consumers.alerts.subject import AlertSubject
from infra.kafka.consumer import ConsumerService, Decoded
from infra.kafka.producer import EventProducer
from infra.objectstore import ObjectNotFound, ObjectStore
from infra.settings import Settings
from schemas.diemap import decode_die_map
from schemas.errors import InvalidEvent
from schemas.topics import ALERT_NOTIFICATIONS, DLQ_SUFFIX, LOT_EXCURSIONS, WAFER_ASSESSED
from schemas.wire import AvroCodec

log = structlog.get_logger(__name__)

_NAMESPACE = uuid.UUID("a8c0f7a2-51d4-4f0b-8d1e-2b7c5e9d3f41")
_FINAL = {"delivered": "DELIVERED", "failed": "FAILED", "suppressed": "SUPPRESSED",
          "digested": "DIGESTED"}


def subject_from_assessed(event: dict[str, Any], labels: np.ndarray | None) -> AlertSubject:
    """The notifier's view of a wafer-assessed event."""
    dies = decode_die_map(event["die_map"]) if event.get("die_map") else None
    if labels is not None and (dies is None or labels.shape != dies.shape):
        labels = None  # a mask that does not fit the map is dropped, not fatal
    return AlertSubject(
        kind="wafer",
        event_id=event["event_id"],
        lot_id=event["lot_id"],
        wafer_id=event["wafer_id"],
        product=event["product"],
        tester=event["tester"],
        severity_score=event["severity_score"],
        severity_level=event["severity_level"].lower(),
        dominant_pattern=event["dominant_pattern"],
        patterns=event["patterns"],
        top_clusters=[
            {"pattern": c["pattern"], "die_count": c["die_count"],
             "centroid_mm": (c["centroid_x_mm"] or 0.0, c["centroid_y_mm"] or 0.0)}
            for c in event.get("top_clusters") or []
        ],
        occurred_at=event["occurred_at"],
        dies=dies,
        die_labels=labels,
    )


def subject_from_excursion(event: dict[str, Any]) -> AlertSubject:
    """A lot excursion is always critical: a whole lot is at stake."""
    return AlertSubject(
        kind="lot_excursion",
        event_id=event["event_id"],
        lot_id=event["lot_id"],
        product=event["product"],
        severity_score=100.0,
        severity_level="critical",
        dominant_pattern=event.get("pattern") or "none",
        patterns=[event["pattern"]] if event.get("pattern") else [],
        excursion_cause=f"{event['cause']}: {event['detail']}",
        occurred_at=event["occurred_at"],
    )


class AlertService:
    """Decode, notify, publish outcomes."""

    def __init__(
        self,
        settings: Settings,
        notifier: Notifier,
        producer: EventProducer,
        codec: AvroCodec,
        store: ObjectStore,
    ) -> None:
        self.settings = settings
        self.notifier = notifier
        self.producer = producer
        self.codec = codec
        self.store = store

    def service(self) -> ConsumerService[tuple[str, dict[str, Any]]]:
        return ConsumerService(
            name="alerts",
            group_id=f"{self.settings.topic_prefix}waferstream-alerts",
            topics=[self.settings.topic(WAFER_ASSESSED.name), self.settings.topic(LOT_EXCURSIONS.name)],
            decode=self.decode,
            process=self.process,
        )

    def decode(self, msg: Message) -> tuple[str, dict[str, Any]]:
        if msg.topic() == self.settings.topic(WAFER_ASSESSED.name):
            return "wafer_assessed", self.codec.decode(msg.value(), "wafer_assessed")
        return "lot_excursion", self.codec.decode(msg.value(), "lot_excursion")

    async def process(self, batch: list[Decoded[tuple[str, dict[str, Any]]]]) -> None:
        for item in batch:
            kind, event = item.value
            subject = await self._subject(kind, event)
            outcomes = await self.notifier.handle(subject)
            for outcome in outcomes:
                self._publish_outcome(event, subject, outcome)

    async def _subject(self, kind: str, event: dict[str, Any]) -> AlertSubject:
        try:
            if kind == "lot_excursion":
                return subject_from_excursion(event)
            subject = subject_from_assessed(event, None)
            if not self.notifier.routes(subject):
                return subject  # most wafers alert nobody: skip reading their mask
            labels = await asyncio.to_thread(self._mask, event.get("mask_uri"))
            return subject_from_assessed(event, labels)
        except ValueError as exc:  # pydantic validation: an impossible event
            raise InvalidEvent(f"cannot alert on {kind}: {exc}") from exc

    def _mask(self, uri: str | None) -> np.ndarray | None:
        if not uri:
            return None
        try:
            data = self.store.get(self.store.key_of(uri))
        except (ObjectNotFound, ValueError):
            log.warning("mask not found; alert goes out without die labels", mask_uri=uri)
            return None
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)

    def _publish_outcome(
        self, event: dict[str, Any], subject: AlertSubject, outcome: AlertOutcome
    ) -> None:
        # A duplicate re-announces the alert's final status: the first announcement
        # may have died with a crashed instance; the event id below is the same.
        status = _FINAL.get(outcome.final_status or outcome.status)
        if status is None:
            return
        key = f"{event['event_id']}/{outcome.rule}/{outcome.channel}/{outcome.recipient}"
        self.producer.send(ALERT_NOTIFICATIONS, subject.lot_id, {
            "event_id": str(uuid.uuid5(_NAMESPACE, key)),
            "schema_version": 1,
            "occurred_at": datetime.now(UTC),
            "correlation_id": event.get("correlation_id") or event["event_id"],
            "source_event_id": event["event_id"],
            "lot_id": subject.lot_id,
            "wafer_id": subject.wafer_id,
            "rule": outcome.rule,
            "channel": outcome.channel,
            "recipient": outcome.recipient,
            "status": status,
            "reason": outcome.reason,
            "severity_score": subject.severity_score,
        })


def dead_letter_to_topic(settings: Settings, producer: EventProducer) -> DeadLetterHandler:
    """A notifier dead-letter handler that parks undeliverable alerts on the DLQ topic."""

    async def dead_letter(letter: DeadLetter) -> None:
        value = json.dumps({
            "alert_ids": list(letter.alert_ids), "channel": letter.channel,
            "recipient": letter.recipient, "reason": letter.reason, "payload": letter.payload,
        }, default=str).encode()
        producer.send_raw(
            settings.topic(ALERT_NOTIFICATIONS.name) + DLQ_SUFFIX,
            letter.channel.encode(), value,
            {"x-dlq-error-kind": "undeliverable", "x-dlq-error": letter.reason[:2000],
             "x-dlq-failed-at": datetime.now(UTC).isoformat()},
        )
        await asyncio.to_thread(producer.flush)

    return dead_letter


async def flush_digests_forever(
    flush: Callable[[], Awaitable[object]], interval_s: float, stop: asyncio.Event
) -> None:
    """Send due digests every ``interval_s`` until ``stop`` is set (errors are logged)."""
    while not stop.is_set():
        try:
            await flush()
        except Exception as exc:  # noqa: BLE001 - a Redis blip must not kill the service
            log.warning("digest flush failed", error=str(exc))
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            pass
