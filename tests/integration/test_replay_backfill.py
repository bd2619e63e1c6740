"""Replay of a topic range and archive backfill, against the real broker and store.

Acceptance: a time-range replay copies exactly the records whose timestamps
fall in the range onto the backfill lane, even though the dev broker answers
every ``offsets_for_times`` with 0; an archive backfill publishes
BACKFILL-lane events for the requested model, resumes after an interruption
and never publishes a file twice.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from infra.kafka.admin import ensure_topics
from infra.kafka.producer import EventProducer
from infra.settings import Settings
from producers.backfill import ArchiveFilter, run_backfill
from producers.cli import backfill_command, replay_command
from producers.events import WaferContext, wafer_completed_event
from producers.publisher import Publisher
from producers.replay import Bound, _Reader, replay
from schemas.topics import WAFER_TEST_COMPLETED, WAFER_TEST_COMPLETED_BACKFILL
from tests.integration.test_publisher import decoded, write_wafer
from tests.pipeline import read_topic

pytestmark = pytest.mark.integration

LOTS = ("LR1", "LR2", "LR3")


def _publish_batch(producer: EventProducer, tag: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        lot = LOTS[n % len(LOTS)]
        end = datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=n)
        ctx = WaferContext(lot_id=lot, wafer_id=f"{lot}-{tag}{n:02d}", product="P", tester="T",
                           test_program="S", start_time=end, end_time=end)
        event = wafer_completed_event(ctx, np.ones((4, 4), np.uint8))
        producer.send(WAFER_TEST_COMPLETED, lot, event)
        ids.append(event["event_id"])
    producer.flush()
    return ids


def _now_ms() -> int:
    return int(time.time() * 1000)


@pytest.mark.parametrize("lookup", ["broker", "answers-zero"])
def test_time_range_replay_copies_exactly_that_range(
    settings: Settings, lookup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if lookup == "answers-zero":  # tansu's documented defect, forced so both paths are tested
        monkeypatch.setattr(_Reader, "offset_for_time", lambda self, partition, time_ms: 0)
    ensure_topics(settings, (WAFER_TEST_COMPLETED, WAFER_TEST_COMPLETED_BACKFILL))
    producer = EventProducer(settings)
    _publish_batch(producer, "A", 12)
    time.sleep(0.05)
    t1 = _now_ms()
    time.sleep(0.05)
    inside = _publish_batch(producer, "B", 12)
    time.sleep(0.05)
    t2 = _now_ms()
    time.sleep(0.05)
    _publish_batch(producer, "C", 12)

    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat()

    report = replay(settings, WAFER_TEST_COMPLETED.name, Bound.parse(iso(t1)), Bound.parse(iso(t2)),
                    idle_s=0.5)
    copied = read_topic(settings, settings.topic(WAFER_TEST_COMPLETED_BACKFILL.name))
    assert report.copied == 12
    assert sorted(dict(m.headers())["event_id"].decode() for m in copied) == sorted(inside)
    used = {p.start_method for p in report.partitions if p.copied}
    assert used == ({"search"} if lookup == "answers-zero" else {"broker-lookup"})
    assert all(p.start > 0 for p in report.partitions if p.copied)  # batch A came first
    source = settings.topic(WAFER_TEST_COMPLETED.name)
    for msg in copied:
        headers = {k: v.decode() for k, v in msg.headers()}
        assert headers["x-replayed-from-topic"] == source
        assert t1 <= int(headers["x-replayed-from-timestamp"]) < t2
    originals = {dict(m.headers())["event_id"]: m for m in read_topic(settings, source)}
    for msg in copied:  # key and value byte for byte
        original = originals[dict(msg.headers())["event_id"]]
        assert (msg.key(), msg.value()) == (original.key(), original.value())


def test_offset_range_replay_through_the_cli(settings: Settings) -> None:
    ensure_topics(settings, (WAFER_TEST_COMPLETED, WAFER_TEST_COMPLETED_BACKFILL))
    _publish_batch(EventProducer(settings), "A", 30)
    source = read_topic(settings, settings.topic(WAFER_TEST_COMPLETED.name))
    partition = max({m.partition() for m in source}, key=lambda p: sum(m.partition() == p for m in source))
    expected = [m for m in source if m.partition() == partition][2:5]
    assert [m.offset() for m in expected] == [2, 3, 4]

    result = CliRunner().invoke(
        replay_command,
        ["--topic", WAFER_TEST_COMPLETED.name, "--from", "2", "--to", "5",
         "--partitions", str(partition), "--idle", "0.5"],
        obj=settings,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{"):])["copied"] == 3
    copied = read_topic(settings, settings.topic(WAFER_TEST_COMPLETED_BACKFILL.name))
    assert [m.value() for m in copied] == [m.value() for m in expected]


def test_archive_backfill_is_resumable_and_never_republishes(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings, (WAFER_TEST_COMPLETED, WAFER_TEST_COMPLETED_BACKFILL))
    files = [
        write_wafer(tmp_path, f"w{n}.npy", f"LB{n % 2}", f"LB{n % 2}-W{n:02d}", seed=n,
                    product="MCU-M4" if n == 4 else "PMIC-A7")
        for n in range(5)
    ]
    publisher = Publisher(settings)
    try:
        live_ids = [publisher.spool_file(f).event_ids[0] for f in files]
    finally:
        publisher.close()

    first = run_backfill(settings, "v2", limit=2, progress=False)  # interrupted after 2 files
    second = run_backfill(settings, "v2", progress=False)
    third = run_backfill(settings, "v2", progress=False)
    assert (first.files, second.files, third.files) == (2, 3, 0)
    assert (second.skipped_done, third.skipped_done) == (2, 5)

    backfill_topic = settings.topic(WAFER_TEST_COMPLETED_BACKFILL.name)
    events = decoded(read_topic(settings, backfill_topic))
    assert len(events) == 5 and len({e["event_id"] for e in events}) == 5
    assert sorted(e["correlation_id"] for e in events) == sorted(live_ids)
    assert not {e["event_id"] for e in events} & set(live_ids)
    assert {(e["lane"], e["requested_model"]) for e in events} == {("BACKFILL", "v2")}
    assert all(e["source_uri"].startswith("file://") for e in events)

    result = CliRunner().invoke(
        backfill_command, ["--from-archive", "--model", "v3", "--product", "MCU-M4"], obj=settings
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{"):])["events"] == 1
    everything = decoded(read_topic(settings, backfill_topic))
    assert len(everything) == 6
    assert [e["wafer_id"] for e in everything if e["requested_model"] == "v3"] == ["LB0-W04"]


def test_archive_filter_by_lot_and_test_time() -> None:
    manifest = {"lot_id": "L1", "products": ["P"], "end_times": ["2024-05-01T10:00:00+00:00"]}
    may = datetime(2024, 5, 1, tzinfo=UTC)
    assert ArchiveFilter(lots=("L1",), since=may).matches(manifest)
    assert not ArchiveFilter(lots=("L2",)).matches(manifest)
    assert not ArchiveFilter(since=may + timedelta(days=1)).matches(manifest)
    assert not ArchiveFilter(until=may).matches(manifest)
