"""Which model serves which wafer, and how a new model is rolled out without downtime.

The serving model changes only through ``model.lifecycle`` events (PROMOTED
and ROLLED_BACK): every worker reads that compacted, single-partition topic
from the beginning with its own assignment (no consumer group, so every
worker sees every event), verifies the artifact's SHA-256, loads it, and
swaps it in. The worker asks for the model once per micro-batch, so a swap
happens *between* batches: no record is dropped or processed twice, and
each result records the version that produced it.

Backfill events may name another model (``requested_model``); any version
announced on the topic (TRAINED included) is loaded on first use and kept.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from infra.objectstore import ObjectStore
from infra.settings import Settings
from ml.serving import WaferModel
from schemas.errors import InvalidEvent
from schemas.topics import MODEL_LIFECYCLE
from schemas.wire import AvroCodec

log = structlog.get_logger(__name__)

#: Files that make up one model besides the ``.onnx`` graph itself.
COMPANION_FILES = ("model_card.json", "model.mc_head.onnx")


class ModelRegistry:
    """The serving model plus every announced model, thread-safe."""

    def __init__(self, serving: WaferModel, cache_dir: Path, store: ObjectStore,
                 intra_op_threads: int = 1) -> None:
        self._lock = threading.Lock()
        self._current = serving
        self._loaded: dict[str, WaferModel] = {serving.version: serving}
        self._announced: dict[str, dict[str, Any]] = {}
        self._cache_dir = cache_dir
        self._store = store
        self._threads = intra_op_threads

    @property
    def current(self) -> WaferModel:
        with self._lock:
            return self._current

    def get(self, version: str | None) -> WaferModel:
        """The model for ``version`` (None = serving); unknown versions are invalid input."""
        if version is None:
            return self.current
        with self._lock:
            model = self._loaded.get(version)
            announced = self._announced.get(version)
        if model is not None:
            return model
        if announced is None:
            raise InvalidEvent(f"requested model {version!r} was never announced on model.lifecycle")
        model = self._load(announced)
        with self._lock:
            self._loaded[version] = model
        return model

    def apply(self, event: dict[str, Any]) -> None:
        """Record a lifecycle event; PROMOTED / ROLLED_BACK swap the serving model."""
        version = event["model_version"]
        with self._lock:
            self._announced[version] = event
        if event["action"] in ("PROMOTED", "ROLLED_BACK"):
            model = self.get(version)
            with self._lock:
                previous, self._current = self._current.version, model
            log.info("serving model swapped", previous=previous, current=version,
                     action=event["action"])

    def _load(self, event: dict[str, Any]) -> WaferModel:
        path = self._fetch(event["artifact_uri"], event["model_version"])
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != event["sha256"]:
            raise InvalidEvent(
                f"model {event['model_version']}: artifact sha256 {digest[:12]} does not match "
                f"the announced {event['sha256'][:12]}"
            )
        return WaferModel.load(path, self._threads)

    def _fetch(self, uri: str, version: str) -> Path:
        """A local path to the model's ``.onnx`` (downloading it and its companions if remote)."""
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            return Path(unquote(parsed.path))
        key = self._store.key_of(uri)
        target = self._cache_dir / "".join(c if c.isalnum() or c in "._-" else "_" for c in version)
        target.mkdir(parents=True, exist_ok=True)
        local = target / "model.onnx"
        local.write_bytes(self._store.get(key))
        prefix = key.rsplit("/", 1)[0]
        for name in COMPANION_FILES:
            companion = f"{prefix}/{name}"
            if self._store.exists(companion):
                (target / name).write_bytes(self._store.get(companion))
        return local


class LifecycleWatcher:
    """Follows ``model.lifecycle`` from the beginning on a background thread."""

    def __init__(self, settings: Settings, registry: ModelRegistry, codec: AvroCodec) -> None:
        self.settings = settings
        self.registry = registry
        self.codec = codec
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-lifecycle", daemon=True)
        self._consumer = Consumer({
            **settings.kafka.client_config(),
            "group.id": f"{settings.topic_prefix}waferstream-lifecycle-reader",
            "enable.auto.commit": False,
        })
        topic = settings.topic(MODEL_LIFECYCLE.name)
        self._consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])

    def catch_up(self, idle_s: float = 1.0) -> None:
        """Apply what is already on the topic before serving (the latest promotion wins)."""
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            if self._poll_once(0.1):
                last = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poll_once(0.5)

    def _poll_once(self, timeout: float) -> bool:
        msg = self._consumer.poll(timeout)
        if msg is None or msg.error():
            return False
        try:
            self.registry.apply(self.codec.decode(msg.value(), "model_lifecycle"))
        except Exception as exc:  # noqa: BLE001 - a bad announcement must not stop serving
            log.error("model lifecycle event rejected", offset=msg.offset(), error=str(exc))
        return True
