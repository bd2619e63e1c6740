"""The severity processor: wafer-segmented -> assessments, lot state, lot excursions.

It runs on the same at-least-once consumer loop as every confluent-kafka
service (:mod:`infra.kafka.consumer`), so decoding failures go to
``wafer.segmented.dlq`` with the usual ``x-dlq-*`` headers, dependency
outages pause and retry, and offsets are stored only after a batch's effects
are durable.

Lot state lives in PostgreSQL (``lot_state.state``), one document per lot.
The input is keyed by lot, so one partition - one processor - owns a lot;
the state is read, updated with the pure lot rules and written back per
wafer, in input order. Per wafer:

1. metrics + severity (pure); upsert the assessment, queue the
   ``wafer_assessed`` event (deterministic id);
2. the lot rules on the lot's state; each new excursion is *claimed* in
   PostgreSQL, published and flushed, then *confirmed*;
3. only then the state document is written, so a replayed wafer starts from
   the same state and nothing is counted twice (the wafer's event id is
   remembered in the state).

Why not a faust table: on the development broker faust-streaming 0.15.3
skipped the first record after a restart (its committed-offset check in the
drain loop), i.e. lost a wafer; durable state in the database the results go
to anyway has no such dependency and survives any restart. The faust app
factory (:mod:`infra.faust_app`) remains for processors that need it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
import structlog
from confluent_kafka import Message

from consumers.severity import sink
from consumers.severity.config import SeveritySettings
from consumers.severity.events import lot_excursion, wafer_assessed
from consumers.severity.lot import (
    Baseline,
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
from infra.kafka.consumer import ConsumerService, Decoded
from infra.kafka.producer import EventProducer
from infra.settings import Settings
from schemas.diemap import decode_die_map
from schemas.ids import validate_id
from schemas.topics import LOT_EXCURSIONS, WAFER_ASSESSED, WAFER_SEGMENTED
from schemas.wire import AvroCodec

log = structlog.get_logger(__name__)

@dataclass(frozen=True)
class SegmentedWafer:
    """A validated wafer-segmented event with its computed metrics."""

    event: dict[str, Any]
    metrics: WaferMetrics


class SeverityProcessor:
    """Decode, assess, keep lot state, emit excursions."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        producer: EventProducer,
        codec: AvroCodec,
        config: SeveritySettings | None = None,
    ) -> None:
        self.settings = settings
        self.config = config or settings.severity
        self.pool = pool
        self.producer = producer
        self.codec = codec

    def service(self) -> ConsumerService[SegmentedWafer]:
        return ConsumerService(
            name="severity",
            group_id=f"{self.settings.topic_prefix}waferstream-severity",
            topics=[self.settings.topic(WAFER_SEGMENTED.name)],
            decode=self.decode,
            process=self.process,
        )

    def decode(self, msg: Message) -> SegmentedWafer:
        event = self.codec.decode(msg.value(), "wafer_segmented")
        validate_id(event["lot_id"], "lot id")
        validate_id(event["wafer_id"], "wafer id")
        dies: np.ndarray = decode_die_map(event["die_map"])
        metrics = compute_metrics(
            dies, event["clusters"], event["geometry"], event["label"],
            self.config.edge_band_mm, self.config.edge_band_fraction,
        )
        return SegmentedWafer(event, metrics)

    async def process(self, batch: list[Decoded[SegmentedWafer]]) -> None:
        """All effects of a batch; safe to repeat from the top after any failure.

        Assessments are written in one statement, every lot's state is read
        once, the lot rules run in input order (a lot's wafers in test
        order) and each touched lot's state is written back last.
        """
        wafers = [item.value for item in batch]
        assessed = [
            wafer_assessed(w.event, w.metrics, assess(w.metrics, self.config)) for w in wafers
        ]
        await sink.upsert_assessments(self.pool, assessed)
        for record in assessed:
            self.producer.send(WAFER_ASSESSED, record["lot_id"], record)

        states = await sink.load_lot_states(self.pool, {w.event["lot_id"] for w in wafers})
        # Other lots' states are only written at the end of the batch, so one
        # baseline query per lot and batch sees exactly what per-wafer queries would.
        baselines: dict[str, Baseline | None] = {}
        for wafer, record in zip(wafers, assessed, strict=True):
            event = wafer.event
            lot_id = event["lot_id"]
            state, changed = record_wafer(states.get(lot_id), WaferFacts(
                event_id=event["event_id"], wafer_id=event["wafer_id"],
                product=event["product"], yield_pct=wafer.metrics.yield_pct,
                systematic_patterns=systematic_patterns(
                    event["patterns"], event["label"], event["pattern_probs"],
                    self.config.repeat_min_probability,
                ),
            ))
            states[lot_id] = await self._emit_excursions(
                lot_id, event["correlation_id"], state, baselines
            )
            log.info(
                "wafer assessed", lot_id=lot_id, wafer_id=event["wafer_id"], replay=not changed,
                score=record["severity_score"], level=record["severity_level"],
            )
        await sink.upsert_lot_states(self.pool, states)

    async def _emit_excursions(
        self,
        lot_id: str,
        correlation_id: str,
        state: LotState,
        baselines: dict[str, Baseline | None],
    ) -> LotState:
        baseline = None
        if needs_baseline(state, self.config):
            if lot_id not in baselines:
                yields = await sink.recent_lot_yields(
                    self.pool, state["product"], lot_id, self.config.min_wafers_for_yield,
                    self.config.baseline_window_lots,
                )
                baselines[lot_id] = baseline_from_yields(yields, self.config)
            baseline = baselines[lot_id]
        for excursion in new_excursions(state, baseline, self.config):
            record = lot_excursion(lot_id, state["product"], correlation_id, excursion)
            if await sink.claim_excursion(self.pool, record):
                self.producer.send(LOT_EXCURSIONS, lot_id, record)
                await asyncio.to_thread(self.producer.flush)  # acknowledged before confirmed
                await sink.confirm_excursion(self.pool, record)
                log.warning("lot excursion", lot_id=lot_id, cause=excursion.cause,
                            pattern=excursion.pattern, detail=excursion.detail)
            state = mark_emitted(state, excursion.key)
        return state
