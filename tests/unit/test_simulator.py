"""The simulator's ground truth must describe exactly what it published.

Tests and the demo score the pipeline against the truth JSONL; a truth line
that disagrees with the published event would make every such score wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from producers.simulator import SimulationConfig, publish_simulation
from schemas.diemap import FAIL, decode_die_map
from schemas.topics import WAFER_TEST_COMPLETED, TopicSpec
from schemas.wire import AvroCodec


class EncodingProducer:
    """Stands in for EventProducer: encodes like the real one and keeps the bytes."""

    def __init__(self) -> None:
        self.codec = AvroCodec()
        self.sent: list[tuple[str, bytes]] = []
        self.flushed = False

    def send(self, spec: TopicSpec, key: str, record: dict[str, Any]) -> None:
        self.sent.append((key, self.codec.encode(spec.event_type or "", record, spec.name)))

    def flush(self) -> None:
        self.flushed = True


def test_truth_matches_the_published_events(tmp_path: Path) -> None:
    truth_file = tmp_path / "truth.jsonl"
    producer = EncodingProducer()
    config = SimulationConfig(seed=3, wafers=30, excursion_every_lots=2, max_side=40)
    publish_simulation(producer, config, WAFER_TEST_COMPLETED, truth_file=truth_file)

    truth = [json.loads(line) for line in truth_file.read_text().splitlines()]
    events = [producer.codec.decode(value, "wafer_test_completed") for _, value in producer.sent]
    assert producer.flushed and len(truth) == len(events) == 30
    for line, event, (key, _) in zip(truth, events, producer.sent, strict=True):
        assert key == event["lot_id"]
        for field in ("event_id", "lot_id", "wafer_id", "product", "tester"):
            assert line[field] == event[field], field
        dies = decode_die_map(event["die_map"])
        assert line["failing_dies"] == int((dies == FAIL).sum()) > 0
        assert line["total_dies"] == int(np.count_nonzero(dies))

    lots = sorted({line["lot_id"] for line in truth})
    assert len(lots) == 2  # 25 wafers per lot
    excursion = [line for line in truth if line["lot_id"] == lots[1]]
    assert {line["episode"] for line in excursion} == {
        f"excursion-{excursion[0]['tester']}-{config.excursion_pattern}"
    }
    assert all(line["episode"] is None for line in truth if line["lot_id"] == lots[0])
    # The episode prints its pattern on most of that tester's wafers (80 % by design).
    with_pattern = sum(config.excursion_pattern in line["patterns"] for line in excursion)
    assert with_pattern >= len(excursion) // 2
    assert any(line["patterns"] for line in truth if line["lot_id"] == lots[0])  # base rate
