"""Re-run archived wafer files through the pipeline with a given model version.

The publisher archives every original file with a manifest
(:func:`producers.publisher.archive_source`); a backfill lists those
manifests, filters them (test time, lot, product), re-parses each file and
publishes its wafers to the backfill lane topic with ``lane="BACKFILL"`` and
``requested_model=<version>``.

Event ids: a live event id is derived from the wafer's content, so a
re-parsed wafer would get the *same* id and be dropped by every consumer as a
duplicate. A backfill event therefore gets its own id, derived from the live
id and the model version (stable: re-running the same backfill gives the
same ids, so downstream dedupe still works), and points back at the live
event through ``correlation_id`` and the ``x-backfill-of`` header. Results are
stored per (source event, model version), so a backfill adds rows beside the
live ones and never overwrites them.

Resumable: a file counts as done for a model version only after the broker
acknowledged all its events; that is recorded in a small SQLite checkpoint in
the data dir, and a re-run skips done files. A crash between the
acknowledgement and the checkpoint re-sends one file's events with the same
ids (at-least-once, deduped downstream).
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import structlog
from tqdm import tqdm

from infra.kafka.producer import EventProducer
from infra.objectstore import ObjectStore, open_object_store
from infra.settings import Settings
from producers.formats import WaferFileError, read_wafers
from producers.publisher import MANIFEST_KIND, wafer_events
from producers.replay import parse_utc
from schemas.topics import WAFER_TEST_COMPLETED_BACKFILL

log = structlog.get_logger(__name__)

_BACKFILL_NAMESPACE: Final = uuid.UUID("0d6c2a51-7f3e-4b8a-9e21-5c4f1a7b3d92")


def backfill_event(live: dict[str, Any], model: str) -> dict[str, Any]:
    """The backfill twin of a live event: own stable id, correlated to the live one."""
    return {
        **live,
        "event_id": str(uuid.uuid5(_BACKFILL_NAMESPACE, f"{live['event_id']}/{model}")),
        "correlation_id": live["event_id"],
        "lane": "BACKFILL",
        "requested_model": model,
    }


@dataclass(frozen=True)
class ArchiveFilter:
    """Which archived files to backfill; ``since``/``until`` compare wafer test end times."""

    since: datetime | None = None
    until: datetime | None = None
    lots: tuple[str, ...] = ()
    products: tuple[str, ...] = ()

    def matches(self, manifest: dict[str, Any]) -> bool:
        times = [datetime.fromisoformat(t) for t in manifest["end_times"]]
        return (
            (not self.lots or manifest["lot_id"] in self.lots)
            and (not self.products or bool(set(manifest["products"]) & set(self.products)))
            and (self.since is None or any(t >= self.since for t in times))
            and (self.until is None or any(t < self.until for t in times))
        )


def archived_manifests(store: ObjectStore, selection: ArchiveFilter) -> list[dict[str, Any]]:
    """Manifests of matching archived files, oldest test first (so lots replay in order)."""
    prefixes = [f"{MANIFEST_KIND}/{lot}/" for lot in selection.lots] or [f"{MANIFEST_KIND}/"]
    manifests = [
        json.loads(store.get(key)) for prefix in prefixes for key in store.list(prefix)
    ]
    chosen = [m for m in manifests if selection.matches(m)]
    return sorted(chosen, key=lambda m: (min(m["end_times"], default=""), m["archive_key"]))


class BackfillCheckpoint:
    """Which archived files are done for which model version (SQLite, crash-safe)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS backfill_done (archive_key TEXT NOT NULL, model TEXT NOT NULL,"
            " events INTEGER NOT NULL, done_at REAL NOT NULL, PRIMARY KEY (archive_key, model))"
        )

    def is_done(self, archive_key: str, model: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM backfill_done WHERE archive_key = ? AND model = ?", (archive_key, model)
        ).fetchone()
        return row is not None

    def mark_done(self, archive_key: str, model: str, events: int) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO backfill_done VALUES (?, ?, ?, ?)",
            (archive_key, model, events, time.time()),
        )

    def close(self) -> None:
        self._conn.close()


class RateLimiter:
    """Pace events to ``per_second`` (0 = unlimited) so a backfill cannot starve live traffic."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = time.monotonic()

    def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
        self._next = max(self._next, now) + self._interval


@dataclass
class BackfillReport:
    selected: int = 0
    skipped_done: int = 0
    files: int = 0
    events: int = 0
    failed: list[str] = field(default_factory=list)


def run_backfill(
    settings: Settings,
    model: str,
    selection: ArchiveFilter = ArchiveFilter(),
    *,
    rate: float = 0.0,
    limit: int | None = None,
    store: ObjectStore | None = None,
    progress: bool = True,
) -> BackfillReport:
    """Publish matching archived files for ``model``; at most ``limit`` files this run.

    Raises:
        DeliveryFailed: the broker did not acknowledge a file's events; that file
            is not checkpointed, and a re-run continues with it.
    """
    store = store or open_object_store(settings)
    manifests = archived_manifests(store, selection)
    checkpoint = BackfillCheckpoint(settings.data_dir / "backfill-checkpoint.sqlite")
    report = BackfillReport(selected=len(manifests))
    todo = [m for m in manifests if not checkpoint.is_done(m["archive_key"], model)]
    report.skipped_done = len(manifests) - len(todo)
    todo = todo[:limit] if limit is not None else todo
    producer = EventProducer(settings)
    limiter = RateLimiter(rate)
    bar = tqdm(total=len(todo), unit="file", desc=f"backfill {model}", disable=not progress)
    try:
        for manifest in todo:
            try:
                events = _archived_events(store, manifest, model)
            except WaferFileError as exc:
                log.error("archived file unreadable; skipped", key=manifest["archive_key"], error=str(exc))
                report.failed.append(manifest["archive_key"])
                bar.update(1)
                continue
            for event in events:
                limiter.wait()
                producer.send(WAFER_TEST_COMPLETED_BACKFILL, event["lot_id"], event,
                              {"x-backfill-of": event["correlation_id"]})
            producer.flush()
            checkpoint.mark_done(manifest["archive_key"], model, len(events))
            report.files += 1
            report.events += len(events)
            bar.update(1)
            bar.set_postfix(events=report.events)
    finally:
        bar.close()
        checkpoint.close()
    log.info("backfill finished", model=model, selected=report.selected, files=report.files,
             events=report.events, skipped_done=report.skipped_done, failed=len(report.failed))
    return report


def _archived_events(store: ObjectStore, manifest: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """Download and re-parse one archived file into its backfill events."""
    with tempfile.TemporaryDirectory(prefix="ws-backfill-") as tmp:
        path = Path(tmp) / Path(manifest["filename"]).name
        path.write_bytes(store.get(manifest["archive_key"]))
        wafers = read_wafers(path, manifest.get("metadata"))
    live = wafer_events(wafers, manifest["uri"])
    return [backfill_event(event, model) for event in live]


def parse_filter(
    since: str | None, until: str | None, lots: Sequence[str], products: Sequence[str]
) -> ArchiveFilter:
    """Build a filter from CLI strings (ISO-8601 times; naive = UTC)."""
    return ArchiveFilter(
        since=parse_utc(since) if since else None,
        until=parse_utc(until) if until else None,
        lots=tuple(lots),
        products=tuple(products),
    )
