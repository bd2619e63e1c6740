"""ATE publisher and drop-folder watcher against a real broker and object store.

Acceptance: a broker outage while 100 files arrive loses and duplicates
nothing and keeps lot order; re-publishing a file is deduped by its
content-derived event ids; bad files are quarantined with a reason while the
watcher keeps publishing the good ones.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from confluent_kafka import Message

from infra.kafka.admin import ensure_topics
from infra.settings import Settings
from infra.stack.components import Broker
from producers.cli import publish
from producers.publisher import Publisher
from producers.watcher import DropFolderWatcher
from schemas.topics import WAFER_TEST_COMPLETED
from schemas.wire import shared_codec
from tests.pipeline import read_topic
from tests.ports import free_port

pytestmark = pytest.mark.integration


def decoded(messages: list[Message]) -> list[dict[str, Any]]:
    codec = shared_codec()
    return [codec.decode(m.value(), "wafer_test_completed") for m in messages]


def write_wafer(folder: Path, name: str, lot: str, wafer: str, *, seed: int = 0,
                product: str = "PMIC-A7", sidecar: bool = True, age_s: float = 60.0) -> Path:
    """A pass/fail .npy map with its metadata sidecar, modified ``age_s`` ago (settled)."""
    rng = np.random.default_rng(seed)
    dies = rng.choice(np.array([1, 1, 1, 2], dtype=np.uint8), size=(8, 9))
    dies[0, 0] = 0
    path = folder / name
    np.save(path, dies)
    if sidecar:
        (folder / f"{name}.json").write_text(json.dumps({
            "lot_id": lot, "wafer_id": wafer, "product": product, "tester": "ATE-01",
            "test_program": "SORT1", "end_time": f"2024-05-01T10:{seed % 60:02d}:00",
        }))
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path


def with_bootstrap(settings: Settings, address: str) -> Settings:
    return settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": address})}
    )


def test_outage_while_100_files_arrive_delivers_each_once_in_lot_order(
    settings: Settings, tmp_path: Path
) -> None:
    broker = Broker(Path(tempfile.mkdtemp(prefix="ws-outage-")), free_port())
    settings = with_bootstrap(settings, broker.start())
    ensure_topics(settings, (WAFER_TEST_COMPLETED,))
    broker.stop()

    drop = tmp_path / "drop"
    drop.mkdir()
    lots = [f"LOT{n}" for n in range(4)]
    for i in range(100):  # lots interleave as four testers finish wafers
        lot = lots[i % 4]
        write_wafer(drop, f"f{i:03d}.npy", lot, f"{lot}-W{i // 4:02d}", seed=i)
    publisher = Publisher(settings, message_timeout_ms=1000)
    watcher = DropFolderWatcher(publisher, drop, settle_s=1.0)
    try:
        report = watcher.run_once()
        assert len(report.published) == 100 and not report.quarantined
        assert report.delivered == 0
        assert publisher.spool.backlog() == 100
        assert len(list((drop / "done").glob("*.npy"))) == 100

        broker.start()
        ensure_topics(settings, (WAFER_TEST_COMPLETED,))
        assert publisher.drain(timeout_s=30)
        assert publisher.spool.backlog() == 0
        events = decoded(read_topic(settings, settings.topic(WAFER_TEST_COMPLETED.name)))
    finally:
        publisher.close()
        broker.stop()

    assert len(events) == 100
    assert len({e["event_id"] for e in events}) == 100
    by_lot: dict[str, list[str]] = defaultdict(list)
    for event in events:
        by_lot[event["lot_id"]].append(event["wafer_id"])
    for lot in lots:
        assert by_lot[lot] == [f"{lot}-W{n:02d}" for n in range(25)]
    assert all(e["source_uri"].startswith("file://") and e["source_format"] == "npy" for e in events)


def test_republishing_a_file_is_deduped_by_event_id(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings, (WAFER_TEST_COMPLETED,))
    path = write_wafer(tmp_path, "w1.npy", "LOTA", "LOTA-W01", seed=3)
    first = CliRunner().invoke(publish, [str(path)], obj=settings)
    assert first.exit_code == 0, first.output
    assert f"{path}: 1 wafers (1 new)" in first.output
    publisher = Publisher(settings)
    try:
        again = publisher.spool_file(path)
        assert publisher.drain(timeout_s=20)
    finally:
        publisher.close()
    assert again.newly_spooled == 0
    messages = read_topic(settings, settings.topic(WAFER_TEST_COMPLETED.name))
    assert [dict(m.headers())["event_id"].decode() for m in messages] == list(again.event_ids)
    assert messages[0].key() == b"LOTA"
    assert decoded(messages)[0]["source_uri"] == again.archive_uri


def test_watcher_quarantines_bad_files_and_publishes_good_ones(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings, (WAFER_TEST_COMPLETED,))
    drop = tmp_path / "drop"
    drop.mkdir()
    good = [write_wafer(drop, f"good{n}.npy", "LOTG", f"LOTG-W{n}", seed=n) for n in range(2)]
    truncated = write_wafer(drop, "truncated.npy", "LOTG", "LOTG-W9", seed=9)
    truncated.write_bytes(truncated.read_bytes()[:-20])  # data section cut short
    (drop / "corrupt.csv").write_text("1,2\n1,7,1\n")
    (drop / "unknown.bin").write_bytes(b"\x00\x01garbage")
    write_wafer(drop, "nolot.npy", "", "", seed=5, sidecar=False)
    fresh = write_wafer(drop, "fresh.npy", "LOTG", "LOTG-W5", seed=5, age_s=0)
    (drop / "partial.stdf.part").write_bytes(b"\x00")
    for path in drop.iterdir():  # everything but `fresh` has settled
        if path != fresh:
            os.utime(path, (time.time() - 60, time.time() - 60))

    publisher = Publisher(settings)
    watcher = DropFolderWatcher(publisher, drop, settle_s=30)
    try:
        report = watcher.run_once()
    finally:
        publisher.close()

    assert sorted(p.name for p in report.published) == ["good0.npy", "good1.npy"]
    assert report.delivered == 2
    quarantine = drop / "quarantine"
    expected = {"truncated.npy": "TruncatedFileError", "corrupt.csv": "CorruptFileError",
                "unknown.bin": "UnsupportedFormatError", "nolot.npy": "UnpublishableFileError"}
    for name, error in expected.items():
        assert (quarantine / name).exists()
        assert (quarantine / f"{name}.reason.txt").read_text().startswith(error)
    assert (quarantine / "truncated.npy.json").exists()  # the sidecar travels with its file
    assert all((drop / "done" / g.name).exists() and not g.exists() for g in good)
    assert fresh.exists() and fresh in report.waiting
    assert (drop / "partial.stdf.part").exists()
    events = decoded(read_topic(settings, settings.topic(WAFER_TEST_COMPLETED.name)))
    assert sorted(e["wafer_id"] for e in events) == ["LOTG-W0", "LOTG-W1"]


def test_publish_dry_run_prints_a_summary_and_publishes_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    path = write_wafer(tmp_path, "w.npy", "LOTD", "LOTD-W01", seed=4, product="MCU-M4")
    result = CliRunner().invoke(publish, [str(path), "--dry-run", "--json"], obj=settings)
    assert result.exit_code == 0, result.output
    [summary] = json.loads(result.stdout)
    [wafer] = summary["wafers"]
    assert (wafer["lot_id"], wafer["wafer_id"], wafer["product"], wafer["grid"]) == (
        "LOTD", "LOTD-W01", "MCU-M4", [8, 9])
    assert wafer["dies"] == wafer["pass"] + wafer["fail"] == 71
    assert not (settings.data_dir / "publisher-spool.sqlite").exists()
    assert not (tmp_path / "objects").exists()


def test_watcher_purges_delivered_spool_entries_after_the_retention(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings, (WAFER_TEST_COMPLETED,))
    drop = tmp_path / "drop"
    drop.mkdir()
    path = write_wafer(drop, "w.npy", "LOTP", "LOTP-W1", seed=3)
    os.utime(path, (time.time() - 60, time.time() - 60))
    publisher = Publisher(settings)

    def rows() -> int:
        with sqlite3.connect(publisher.spool.path) as conn:
            return int(conn.execute("SELECT count(*) FROM spool").fetchone()[0])

    try:
        assert DropFolderWatcher(publisher, drop, settle_s=30).run_once().delivered == 1
        assert rows() == 1 and publisher.spool.backlog() == 0  # kept for re-publish dedup
        DropFolderWatcher(publisher, drop, settle_s=30,
                          spool_retention=timedelta(seconds=-1)).run_once()
        assert rows() == 0  # delivered entries older than the retention are gone
    finally:
        publisher.close()
