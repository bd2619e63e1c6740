"""The faust severity processor: wafer-segmented -> assessments, lot state, excursions.

One agent consumes the lot-keyed wafer-segmented topic; the lot table
(``severity-lots``) is co-partitioned with it, so each lot's state lives with
the partition that carries the lot's wafers. Per record:

1. decode and validate; poison goes to ``wafer.segmented.dlq`` with ``x-dlq-*``
   headers and the stream moves on;
2. metrics + severity (pure), then the assessment upsert and the
   ``wafer_assessed`` event (deterministic id);
3. lot rules on the lot's table entry; each new excursion is claimed in
   PostgreSQL, published, confirmed;
4. only then the table entry is written, so a retried record starts from the
   same state and nothing is counted twice.

Dependency outages (PostgreSQL, broker) retry the same record with capped
backoff; they never DLQ and never crash the agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import faust
import numpy as np
import structlog
from faust.exceptions import PartitionsMismatch

from consumers.severity import sink
from consumers.severity.config import SeveritySettings
from consumers.severity.events import lot_excursion, wafer_assessed
from consumers.severity.lot import (
    LotState,
    WaferFacts,
    baseline_from_yields,
    mark_emitted,
    needs_baseline,
    new_excursions,
    record_wafer,
    systematic_patterns,
)
from consumers.severity.metrics import WaferMetrics, compute_metrics
from consumers.severity.scoring import assess
from infra.errors import default_classifier
from infra.faust_app import create_faust_app
from infra.kafka.dlq import dead_letter_headers
from infra.settings import RetrySettings, Settings
from schemas.diemap import decode_die_map
from schemas.ids import validate_id
from schemas.topics import LOT_EXCURSIONS, WAFER_ASSESSED, WAFER_SEGMENTED, dead_letter_topic
from schemas.wire import AvroCodec, shared_codec

log = structlog.get_logger(__name__)

APP_ID = "waferstream-severity"
LOT_TABLE = "severity-lots"
T = TypeVar("T")


@dataclass(frozen=True)
class SegmentedWafer:
    """A validated wafer-segmented event with its computed metrics."""

    event: dict[str, Any]
    metrics: WaferMetrics


class _MessageView:
    """A faust message seen through confluent-kafka's ``Message`` accessors.

    Lets the processor reuse :func:`infra.kafka.dlq.dead_letter_headers`, so
    DLQ records from faust and from the confluent loop carry identical headers.
    """

    def __init__(self, message: Any) -> None:
        self._message = message

    def headers(self) -> list[tuple[str, bytes]]:
        raw = self._message.headers or []
        return list(raw.items()) if isinstance(raw, Mapping) else list(raw)

    def topic(self) -> str:
        return str(self._message.topic)

    def partition(self) -> int:
        return int(self._message.partition)

    def offset(self) -> int:
        return int(self._message.offset)


async def with_retry(
    what: str, retry: RetrySettings, operation: Callable[[], Awaitable[T]]
) -> T:
    """Run ``operation`` until it succeeds, backing off on dependency outages only.

    Anything the classifier does not call an outage propagates: the caller
    decides whether that is poison.
    """
    delay = retry.initial_s
    while True:
        try:
            return await operation()
        except Exception as exc:
            if default_classifier(exc) != "retry":
                raise
            log.warning("dependency outage, retrying", step=what, error=str(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(retry.max_s, delay * retry.multiplier)


class SeverityProcessor:
    """The faust app, its topics and lot table, and the per-record logic."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        config: SeveritySettings | None = None,
        codec: AvroCodec | None = None,
    ) -> None:
        self.settings = settings
        self.config = config or SeveritySettings()
        self.pool = pool
        self.codec = codec or shared_codec(settings.kafka.schema_registry_url)
        self.app = create_faust_app(
            settings, APP_ID, topic_partitions=WAFER_SEGMENTED.partitions
        )
        self.group = self.app.conf.id
        self.source = self._raw_topic(WAFER_SEGMENTED.name)
        self.assessed = self._raw_topic(WAFER_ASSESSED.name)
        self.excursions = self._raw_topic(LOT_EXCURSIONS.name)
        self.dead_letters = self._raw_topic(dead_letter_topic(WAFER_SEGMENTED).name)
        self.lots = self.app.Table(
            LOT_TABLE, default=None, key_type=str, partitions=WAFER_SEGMENTED.partitions
        )
        self.app.agent(self.source, name="severity")(self._consume)

    def _raw_topic(self, name: str) -> faust.TopicT:
        """Topics carry codec-framed bytes: faust must not (de)serialize them."""
        return self.app.topic(
            self.settings.topic(name), key_type=bytes, value_type=bytes,
            key_serializer="raw", value_serializer="raw",
        )

    async def _consume(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            await self.handle(event.message)

    async def handle(self, message: Any) -> None:
        """Process one record; poison is dead-lettered, outages are retried in place."""
        try:
            wafer = self.decode(message.value)
        except Exception as exc:  # anything about the bytes themselves is poison
            await self._dead_letter(message, exc)
            return
        try:
            await with_retry("apply", self.settings.retry, lambda: self.apply(wafer))
        except PartitionsMismatch:
            raise  # a deployment error, not this record's fault: never DLQ every record
        except Exception as exc:  # not an outage: a bug or an unencodable result
            await self._dead_letter(message, exc)

    def decode(self, payload: bytes | None) -> SegmentedWafer:
        event = self.codec.decode(payload, "wafer_segmented")
        validate_id(event["lot_id"], "lot id")
        validate_id(event["wafer_id"], "wafer id")
        dies: np.ndarray = decode_die_map(event["die_map"])
        metrics = compute_metrics(
            dies, event["clusters"], event["geometry"], event["label"],
            self.config.edge_band_mm, self.config.edge_band_fraction,
        )
        return SegmentedWafer(event, metrics)

    async def apply(self, wafer: SegmentedWafer) -> None:
        """All effects of one wafer; safe to repeat from the top after any failure."""
        event = wafer.event
        lot_id = event["lot_id"]
        assessed = wafer_assessed(event, wafer.metrics, assess(wafer.metrics, self.config))
        await sink.upsert_assessment(self.pool, assessed)
        await self._publish(self.assessed, "wafer_assessed", lot_id, assessed)

        state, changed = record_wafer(self.lots.get(lot_id), WaferFacts(
            event_id=event["event_id"], wafer_id=event["wafer_id"], product=event["product"],
            yield_pct=wafer.metrics.yield_pct,
            systematic_patterns=systematic_patterns(event["patterns"], event["label"]),
        ))
        state = await self._emit_excursions(lot_id, event["correlation_id"], state)
        await sink.upsert_lot_state(self.pool, lot_id, state)
        self.lots[lot_id] = state
        log.info(
            "wafer assessed", lot_id=lot_id, wafer_id=event["wafer_id"], replay=not changed,
            score=assessed["severity_score"], level=assessed["severity_level"],
        )

    async def _emit_excursions(self, lot_id: str, correlation_id: str, state: LotState) -> LotState:
        baseline = None
        if needs_baseline(state, self.config):
            yields = await sink.recent_lot_yields(
                self.pool, state["product"], lot_id, self.config.min_wafers_for_yield,
                self.config.baseline_window_lots,
            )
            baseline = baseline_from_yields(yields, self.config)
        for excursion in new_excursions(state, baseline, self.config):
            record = lot_excursion(lot_id, state["product"], correlation_id, excursion)
            if await sink.claim_excursion(self.pool, record):
                await self._publish(self.excursions, "lot_excursion", lot_id, record)
                await sink.confirm_excursion(self.pool, record)
                log.warning("lot excursion", lot_id=lot_id, cause=excursion.cause,
                            pattern=excursion.pattern, detail=excursion.detail)
            state = mark_emitted(state, excursion.key)
        return state

    async def _publish(
        self, topic: faust.TopicT, event_type: str, key: str, record: dict[str, Any]
    ) -> None:
        """Encode with the shared codec and wait for the broker's acknowledgement."""
        payload = self.codec.encode(event_type, record, topic.get_topic_name())
        headers = {"event_id": record["event_id"].encode(),
                   "correlation_id": record["correlation_id"].encode()}
        await self._send(topic, key.encode(), payload, headers)

    async def _send(
        self, topic: faust.TopicT, key: bytes | None, value: bytes | None,
        headers: dict[str, bytes],
    ) -> None:
        """Send directly and wait for the ack (the producer buffer stalled on the dev broker)."""
        await self.app.producer.send_and_wait(
            topic.get_topic_name(), key, value, partition=None, timestamp=None, headers=headers
        )

    async def _dead_letter(self, message: Any, exc: BaseException) -> None:
        headers = {
            k: v if isinstance(v, bytes) else str(v).encode()
            for k, v in dead_letter_headers(_MessageView(message), exc, self.group).items()  # type: ignore[arg-type]
        }
        log.warning("dead-lettered", topic=message.topic, partition=message.partition,
                    offset=message.offset, error=str(exc)[:300])

        await with_retry("dead_letter", self.settings.retry, lambda: self._send(
            self.dead_letters, message.key, message.value, headers))
