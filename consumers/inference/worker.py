"""The inference worker: wafer-complete -> segmentation -> PostgreSQL + wafer-segmented.

Per micro-batch: decode and validate every event (poison goes to the DLQ),
run the ONNX model once over the batch (maps grouped by resolution bucket
inside :class:`ml.serving.WaferModel`) and find the clusters, store each
die-level mask losslessly in the object store, write wafers/results/clusters
to PostgreSQL in one idempotent transaction, then publish one
wafer-segmented event per wafer. The model run is the loop's *prepare*
step: it runs for the next batch (onnxruntime, without the GIL) while this
batch's clusters are found and its results written.
The loop flushes the producer before storing offsets, so a result is never
committed without its event, and a replay re-creates identical event ids
(derived from source event and model version) that downstream sinks ignore.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import cv2
import numpy as np
import structlog
from confluent_kafka import Message

from consumers.inference.clusters import WaferFrame, find_clusters
from consumers.inference.models import ModelRegistry
from consumers.inference.sink import write_results
from infra.kafka.consumer import ConsumerService, Decoded
from infra.kafka.producer import EventProducer
from infra.objectstore import ObjectStore, object_key
from infra.settings import Settings
from ml.serving import WaferPrediction
from schemas.diemap import decode_die_map
from schemas.errors import InvalidEvent
from schemas.ids import validate_id
from schemas.topics import WAFER_SEGMENTED, WAFER_TEST_COMPLETED, WAFER_TEST_COMPLETED_BACKFILL
from schemas.wire import AvroCodec

log = structlog.get_logger(__name__)

_RESULT_NAMESPACE = uuid.UUID("0d7f54c2-3b8e-4a51-b4a2-6f1d9c0e8b33")


@dataclass(frozen=True)
class ModelOutput:
    """The model's prediction for one wafer, with the version and time that produced it."""

    version: str
    prediction: WaferPrediction
    inference_ms: float


@dataclass(frozen=True)
class SegmentedWafer:
    """What the model made of one wafer: its wafer-segmented event and its mask."""

    event: dict[str, Any]
    mask_key: str
    mask_png: bytes


@dataclass(frozen=True)
class WaferInput:
    """A validated wafer-complete event, its decoded die grid and, once prepared, the model's output."""

    event: dict[str, Any]
    dies: np.ndarray
    output: ModelOutput | None = None


def result_event_id(source_event_id: str, model_version: str) -> str:
    """Deterministic id of the wafer-segmented event: same input + model -> same id."""
    return str(uuid.uuid5(_RESULT_NAMESPACE, f"{source_event_id}/{model_version}"))


class InferenceWorker:
    """Holds the model, the stores and the producer for one worker process."""

    def __init__(
        self,
        settings: Settings,
        models: ModelRegistry,
        pool: asyncpg.Pool,
        store: ObjectStore,
        producer: EventProducer,
        codec: AvroCodec,
    ) -> None:
        self.settings = settings
        self.models = models
        self.pool = pool
        self.store = store
        self.producer = producer
        self.codec = codec

    def service(self, lane: str = "LIVE") -> ConsumerService[WaferInput]:
        """The consumer-loop plug-in for the live or the backfill lane."""
        spec = WAFER_TEST_COMPLETED if lane == "LIVE" else WAFER_TEST_COMPLETED_BACKFILL
        name = "inference" if lane == "LIVE" else "inference-backfill"
        return ConsumerService(
            name=name,
            group_id=f"{self.settings.topic_prefix}waferstream-{name}",
            topics=[self.settings.topic(spec.name)],
            decode=self.decode,
            prepare=self.prepare,
            process=self.process,
        )

    def decode(self, msg: Message) -> WaferInput:
        event = self.codec.decode(msg.value(), "wafer_test_completed")
        validate_id(event["lot_id"], "lot id")
        validate_id(event["wafer_id"], "wafer id")
        if event["end_time"] < event["start_time"]:
            raise InvalidEvent("end_time is before start_time")
        return WaferInput(event, decode_die_map(event["die_map"]))

    def prepare(self, batch: list[Decoded[WaferInput]]) -> list[Decoded[WaferInput]]:
        """Run the model over the batch ahead of :meth:`process` (the loop runs this in a thread)."""
        outputs = self._predict_all([item.value for item in batch])
        return [
            Decoded(item.msg, replace(item.value, output=output))
            for item, output in zip(batch, outputs, strict=True)
        ]

    async def process(self, batch: list[Decoded[WaferInput]]) -> None:
        inputs = [item.value for item in batch]
        segmented = await asyncio.to_thread(self._segment_all, inputs)
        # All masks are stored before any row or event can reference them.
        await asyncio.to_thread(
            self.store.put_many, [(s.mask_key, s.mask_png) for s in segmented], "image/png"
        )
        results = [(w.event, w.dies, s.event) for w, s in zip(inputs, segmented, strict=True)]
        await write_results(self.pool, results)
        for s in segmented:
            self.producer.send(WAFER_SEGMENTED, s.event["lot_id"], s.event)

    def _segment_all(self, inputs: list[WaferInput]) -> list[SegmentedWafer]:
        """Clusters, mask and event per wafer; the model runs here if prepare was skipped."""
        outputs = [w.output for w in inputs if w.output is not None]
        if len(outputs) < len(inputs):
            outputs = self._predict_all(inputs)
        return [self._segmented(w, o) for w, o in zip(inputs, outputs, strict=True)]

    def _predict_all(self, inputs: list[WaferInput]) -> list[ModelOutput]:
        """The model's output per wafer, in input order, from the model its event asks for.

        The model is looked up once per batch (per requested version): a hot
        swap takes effect between batches, never inside one.
        """
        by_model: dict[str | None, list[int]] = {}
        for index, wafer in enumerate(inputs):
            by_model.setdefault(wafer.event["requested_model"], []).append(index)
        outputs: dict[int, ModelOutput] = {}
        for requested, indices in by_model.items():
            model = self.models.get(requested)
            started = time.perf_counter()
            predictions = model.predict(
                [inputs[i].dies for i in indices], self.settings.model.mc_samples
            )
            per_wafer_ms = (time.perf_counter() - started) * 1000 / len(indices)
            outputs.update(
                (i, ModelOutput(model.version, p, per_wafer_ms))
                for i, p in zip(indices, predictions, strict=True)
            )
        return [outputs[i] for i in range(len(inputs))]

    def _segmented(self, wafer: WaferInput, output: ModelOutput) -> SegmentedWafer:
        event, pred, version = wafer.event, output.prediction, output.version
        frame = WaferFrame.from_event(wafer.dies, event["geometry"])
        clusters = find_clusters(
            pred.die_labels, wafer.dies, frame, self.settings.model.min_cluster_dies
        )
        ok, png = cv2.imencode(".png", np.ascontiguousarray(pred.die_labels, dtype=np.uint8))
        if not ok:  # pragma: no cover - encoding a uint8 grid cannot fail
            raise RuntimeError("PNG encoding of the mask failed")
        key = object_key(
            "masks", event["lot_id"], event["wafer_id"], event["event_id"],
            filename=f"{_safe(version)}.png",
        )
        return SegmentedWafer({
            "event_id": result_event_id(event["event_id"], version),
            "schema_version": 1,
            "occurred_at": datetime.now(UTC),
            "correlation_id": event["correlation_id"],
            "source_event_id": event["event_id"],
            "lot_id": event["lot_id"],
            "wafer_id": event["wafer_id"],
            "product": event["product"],
            "tester": event["tester"],
            "test_end_time": event["end_time"],
            "geometry": event["geometry"],
            "die_map": event["die_map"],
            "model_version": version,
            "label": pred.label,
            "pattern_probs": {k: float(v) for k, v in pred.pattern_probs.items()},
            "patterns": list(pred.patterns),
            "clusters": clusters,
            "mask_uri": self.store.uri(key),
            "mean_entropy": float(pred.mean_entropy),
            "margin": float(pred.margin),
            "bald": pred.bald,
            "embedding": pred.embedding.tolist(),
            "inference_ms": round(output.inference_ms, 3),
            "lane": event["lane"],
        }, key, png.tobytes())


def _safe(version: str) -> str:
    """Model versions become file names: keep only id-safe characters."""
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in version)[:64]
