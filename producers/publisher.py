"""The ATE publisher: wafer file -> object-store archive -> durable spool -> Kafka.

Why this order: the original file is archived first so that every event can
point at it (``source_uri``) and a backfill can re-parse it years later; the
events are then written to the SQLite spool (:mod:`producers.spool`) *before*
anything is sent, so a tester host keeps accepting wafers while the broker is
unreachable and a crash never loses one. Delivery sends the oldest pending
entries in spool order (which keeps each lot's wafers in test order), waits
for the broker's acknowledgement and only then marks them delivered; on
failure they stay pending and are retried with capped exponential backoff.

Idempotency: event ids are content-derived (:func:`producers.events.content_event_id`)
and the archive key contains the file's SHA-256, so publishing the same file
twice archives nothing new and spools nothing new.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog

from infra.errors import DeliveryFailed
from infra.kafka.producer import EventProducer
from infra.objectstore import ObjectStore, object_key, open_object_store
from infra.settings import RetrySettings, Settings
from producers.events import WaferContext, die_counts, wafer_completed_event
from producers.formats import ParsedWafer, WaferFileError, read_wafers
from producers.formats.arrays import sidecar_path
from producers.spool import Spool
from schemas.errors import InvalidEvent
from schemas.topics import WAFER_TEST_COMPLETED, TopicSpec
from schemas.wire import AvroCodec, shared_codec

log = structlog.get_logger(__name__)

#: Bounded so that a dead broker turns into a DeliveryFailed (and a retry) in
#: seconds instead of librdkafka's default of minutes.
DEFAULT_MESSAGE_TIMEOUT_MS: Final = 5_000
ARCHIVE_KIND: Final = "archive"
MANIFEST_KIND: Final = "archive-manifest"
_NOTCH: Final = {"U": "UP", "D": "DOWN", "L": "LEFT", "R": "RIGHT"}
_UNSAFE_NAME: Final = re.compile(r"[^A-Za-z0-9._-]")
_ARRAY_FORMATS: Final = frozenset({"npy", "npz", "csv"})


class UnpublishableFileError(WaferFileError):
    """The file parsed, but lacks what an event needs (lot id, test time) or has unsafe ids."""


def codec_for(settings: Settings) -> AvroCodec:
    """The process-wide codec for the configured wire format (registry or single-object)."""
    auth = settings.kafka.schema_registry_auth
    return shared_codec(settings.kafka.schema_registry_url, auth.get_secret_value() if auth else None)


def wafer_context(wafer: ParsedWafer, source_uri: str | None) -> WaferContext:
    """Map a parsed wafer onto the event's context; refuse what cannot be identified.

    Why refuse instead of defaulting: the lot id is the record key and the
    test end time is part of the content-derived event id; inventing either
    (e.g. from the file's mtime) would give the same wafer different ids.
    """
    moment = wafer.end_time or wafer.start_time
    if not wafer.lot_id:
        raise UnpublishableFileError(f"wafer {wafer.wafer_id!r} has no lot id")
    if moment is None:
        raise UnpublishableFileError(f"wafer {wafer.wafer_id!r} has no test start/end time")
    geometry = wafer.geometry
    return WaferContext(
        lot_id=wafer.lot_id,
        sublot_id=wafer.sublot_id,
        wafer_id=wafer.wafer_id,
        product=wafer.product or "UNKNOWN",
        tester=wafer.tester or "UNKNOWN",
        test_program=wafer.test_program or "UNKNOWN",
        test_program_rev=wafer.test_program_rev,
        facility=wafer.facility,
        test_head=wafer.head,
        start_time=wafer.start_time or moment,
        end_time=moment,
        diameter_mm=geometry.diameter_mm,
        die_width_mm=geometry.die_width_mm,
        die_height_mm=geometry.die_height_mm,
        notch=_NOTCH.get((geometry.notch or "").upper()[:1], "UNKNOWN"),
        origin_x=geometry.origin_x,
        origin_y=geometry.origin_y,
        bins=tuple((b.number, b.name, b.passed) for b in wafer.bins),
        source_uri=source_uri,
        source_format=wafer.source_format,
    )


def wafer_events(
    wafers: Sequence[ParsedWafer],
    source_uri: str | None,
    lane: str = "LIVE",
    requested_model: str | None = None,
) -> list[dict[str, Any]]:
    """One ``WaferTestCompleted`` record per wafer, in file order."""
    try:
        return [
            wafer_completed_event(
                wafer_context(w, source_uri), w.dies, w.hard_bins, lane, requested_model
            )
            for w in wafers
        ]
    except InvalidEvent as exc:
        raise UnpublishableFileError(str(exc)) from exc


def wafer_summary(wafer: ParsedWafer) -> dict[str, Any]:
    """What ``publish --dry-run`` shows for a wafer: enough to check a file before it goes live."""
    total, failing = die_counts(wafer.dies)
    return {
        "lot_id": wafer.lot_id,
        "wafer_id": wafer.wafer_id,
        "product": wafer.product,
        "tester": wafer.tester,
        "source_format": wafer.source_format,
        "end_time": wafer.end_time.isoformat() if wafer.end_time else None,
        "grid": list(wafer.dies.shape),
        "dies": total,
        "pass": total - failing,
        "fail": failing,
        "bins": [{"number": b.number, "name": b.name, "passed": b.passed} for b in wafer.bins],
        "complete": wafer.stats.complete,
    }


def array_metadata(
    path: Path, wafers: Sequence[ParsedWafer], metadata: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The metadata a bare array needs to be re-parsed later (sidecar + caller), else None."""
    if not wafers or wafers[0].source_format not in _ARRAY_FORMATS:
        return None
    sidecar = sidecar_path(path)
    merged: dict[str, Any] = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.exists() else {}
    merged.update(metadata or {})
    return merged


@dataclass(frozen=True)
class ArchivedSource:
    """Where an original file went and the manifest that lets a backfill find and re-read it."""

    key: str
    uri: str
    manifest: dict[str, Any]


def archive_source(
    store: ObjectStore,
    path: Path,
    data: bytes,
    wafers: Sequence[ParsedWafer],
    metadata: dict[str, Any] | None,
) -> ArchivedSource:
    """Store the original bytes under ``archive/<lot>/<sha16>-<name>`` plus a JSON manifest.

    Why a manifest: backfill filters by product and test time without
    downloading and re-parsing every archived file, and array files need
    their sidecar metadata to be re-read at all.
    """
    lot_id = wafers[0].lot_id
    digest = hashlib.sha256(data).hexdigest()
    safe_name = _UNSAFE_NAME.sub("_", path.name).lstrip("._-")[-47:] or "file"
    try:
        key = object_key(ARCHIVE_KIND, lot_id, filename=f"{digest[:16]}-{safe_name}")
        manifest_key = object_key(MANIFEST_KIND, lot_id, filename=f"{digest[:16]}.json")
    except InvalidEvent as exc:
        raise UnpublishableFileError(str(exc)) from exc
    if not store.exists(key):
        store.put(key, data)
    uri = store.uri(key)
    manifest = {
        "archive_key": key,
        "uri": uri,
        "filename": path.name,
        "sha256": digest,
        "lot_id": lot_id,
        "source_format": wafers[0].source_format,
        "products": sorted({w.product or "UNKNOWN" for w in wafers}),
        "wafer_ids": [w.wafer_id for w in wafers],
        "end_times": [(w.end_time or w.start_time).isoformat() for w in wafers if w.end_time or w.start_time],
        "metadata": metadata,
    }
    if not store.exists(manifest_key):
        store.put(manifest_key, json.dumps(manifest).encode(), "application/json")
    return ArchivedSource(key, uri, manifest)


@dataclass(frozen=True)
class SpooledFile:
    """Outcome of spooling one file: its events and how many were new to the spool."""

    path: Path
    archive_uri: str
    event_ids: tuple[str, ...]
    newly_spooled: int


class Backoff:
    """Capped exponential backoff: when the next delivery attempt is due."""

    def __init__(self, retry: RetrySettings, clock: Any = time.monotonic) -> None:
        self._retry = retry
        self._clock = clock
        self._delay = 0.0
        self._due = 0.0

    def due(self) -> bool:
        return self._clock() >= self._due

    def failed(self) -> float:
        """Record a failure; returns the delay until the next attempt."""
        self._delay = min(
            self._retry.max_s,
            self._retry.initial_s if self._delay == 0 else self._delay * self._retry.multiplier,
        )
        self._due = self._clock() + self._delay
        return self._delay

    def succeeded(self) -> None:
        self._delay = 0.0
        self._due = 0.0


class Publisher:
    """Spool wafer files and deliver the spool to Kafka (see module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        spool: Spool | None = None,
        store: ObjectStore | None = None,
        topic: TopicSpec = WAFER_TEST_COMPLETED,
        message_timeout_ms: int = DEFAULT_MESSAGE_TIMEOUT_MS,
        batch_size: int = 500,
    ) -> None:
        self.settings = settings
        if spool is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            spool = Spool(settings.data_dir / "publisher-spool.sqlite")
        self.spool = spool
        self.store = store or open_object_store(settings)
        self.topic = topic
        self.codec = codec_for(settings)
        self.message_timeout_ms = message_timeout_ms
        self.batch_size = batch_size
        self.backoff = Backoff(settings.retry)
        self._producer: EventProducer | None = None

    def spool_file(
        self,
        path: Path,
        metadata: Mapping[str, Any] | None = None,
        wafers: Sequence[ParsedWafer] | None = None,
    ) -> SpooledFile:
        """Parse (unless ``wafers`` already holds the parse), archive and durably enqueue ``path``.

        Raises:
            WaferFileError: the file cannot be published (the caller quarantines it).
        """
        path = Path(path)
        if wafers is None:
            wafers = read_wafers(path, metadata)
        if not wafers:
            raise UnpublishableFileError("file contains no wafer")
        data = path.read_bytes()
        # Validate ids before anything is archived under them.
        wafer_events(wafers, None)
        archived = archive_source(self.store, path, data, wafers, array_metadata(path, wafers, metadata))
        events = wafer_events(wafers, archived.uri)
        topic = self.settings.topic(self.topic.name)
        new = 0
        for event in events:
            new += self.spool.enqueue(
                event["event_id"],
                topic,
                event["lot_id"].encode(),
                self.codec.encode(self.topic.event_type or "", event, topic),
                {"event_id": event["event_id"], "correlation_id": event["correlation_id"]},
                event["lot_id"],
            )
        log.info("file spooled", path=str(path), wafers=len(events), new=new, archive=archived.uri)
        return SpooledFile(path, archived.uri, tuple(e["event_id"] for e in events), new)

    def deliver(self) -> int:
        """Send every pending spool entry, oldest first; returns how many were acknowledged.

        Raises:
            DeliveryFailed: the broker did not acknowledge a batch; its entries stay
                pending (with ``attempts``/``last_error`` updated) for the next call.
        """
        delivered = 0
        while entries := self.spool.pending(self.batch_size):
            producer = self._producer or self._new_producer()
            for entry in entries:
                producer.send_raw(entry.topic, entry.key, entry.value, dict(entry.headers))
            try:
                producer.flush(self.message_timeout_ms / 1000 + 5)
            except DeliveryFailed as exc:
                # A fresh producer (new producer id) after an outage: a restarted
                # broker may not know the old id and reject its sequence numbers.
                self._producer = None
                for entry in entries:
                    self.spool.mark_failed(entry.seq, str(exc)[:500])
                raise
            self.spool.mark_delivered(e.seq for e in entries)
            delivered += len(entries)
        return delivered

    def deliver_due(self) -> int:
        """:meth:`deliver` if the backoff allows it now; failures only reschedule (never raise)."""
        if not self.backoff.due():
            return 0
        try:
            delivered = self.deliver()
        except DeliveryFailed as exc:
            delay = self.backoff.failed()
            log.warning("delivery failed; will retry", backlog=self.spool.backlog(),
                        retry_in_s=round(delay, 2), error=str(exc)[:200])
            return 0
        self.backoff.succeeded()
        if delivered:
            log.info("delivered", events=delivered)
        return delivered

    def drain(self, timeout_s: float) -> bool:
        """Retry delivery until the spool is empty or ``timeout_s`` passed; True when empty."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.deliver_due()
            if self.spool.backlog() == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def close(self) -> None:
        self.spool.close()

    def _new_producer(self) -> EventProducer:
        self._producer = EventProducer(
            self.settings, self.codec, **{"message.timeout.ms": self.message_timeout_ms}
        )
        return self._producer
