"""A fab in a box: realistic wafer-complete traffic with recorded ground truth.

Lots of 25 wafers flow through several products and testers. Most wafers
carry background yield loss only; systematic patterns appear at a base rate
and, during an *excursion episode*, one tester starts printing the same
pattern on most of the wafers it tests for a while. Every published wafer's
truth (patterns, die-level labels summary, episode) is appended to a JSONL
file so tests and the demo can check what the pipeline found.

Maps come from the synthetic generator (:mod:`ml.synth`), which has
die-level ground truth, or are replayed from the real WM-811K maps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from ml.synth import generate
from producers.events import WaferContext, die_counts, wafer_completed_event

log = structlog.get_logger(__name__)

PRODUCTS = ("PMIC-A7", "MCU-M4", "RF-X2")
TESTERS = ("ATE-01", "ATE-02", "ATE-03", "ATE-04")
WAFERS_PER_LOT = 25


@dataclass(frozen=True)
class SimulatedWafer:
    """One generated wafer: its event and what is really on it."""

    event: dict[str, Any]
    dies: np.ndarray
    die_labels: np.ndarray | None
    patterns: tuple[str, ...]
    episode: str | None

    def truth(self) -> dict[str, Any]:
        total, failing = die_counts(self.dies)
        return {
            "event_id": self.event["event_id"],
            "lot_id": self.event["lot_id"],
            "wafer_id": self.event["wafer_id"],
            "product": self.event["product"],
            "tester": self.event["tester"],
            "patterns": list(self.patterns),
            "episode": self.episode,
            "total_dies": total,
            "failing_dies": failing,
        }


@dataclass(frozen=True)
class SimulationConfig:
    seed: int = 7
    wafers: int = 100
    pattern_rate: float = 0.35
    excursion_every_lots: int = 4
    excursion_pattern: str = "Scratch"
    max_side: int = 64


class FabSimulator:
    """Deterministic wafer traffic for a seed."""

    def __init__(self, config: SimulationConfig, start: datetime | None = None) -> None:
        self.config = config
        self.start = start or datetime.now(UTC).replace(microsecond=0)
        self._rng = np.random.default_rng(config.seed)

    def wafers(self) -> Iterator[SimulatedWafer]:
        cfg = self.config
        index = 0
        lot_number = 0
        while index < cfg.wafers:
            lot_number += 1
            product = PRODUCTS[lot_number % len(PRODUCTS)]
            tester = TESTERS[int(self._rng.integers(len(TESTERS)))]
            lot_id = f"L{cfg.seed:02d}{lot_number:05d}"
            episode = (
                f"excursion-{tester}-{cfg.excursion_pattern}"
                if cfg.excursion_every_lots and lot_number % cfg.excursion_every_lots == 0
                else None
            )
            for slot in range(1, WAFERS_PER_LOT + 1):
                if index >= cfg.wafers:
                    break
                yield self._wafer(index, lot_id, slot, product, tester, episode)
                index += 1

    def _wafer(
        self, index: int, lot_id: str, slot: int, product: str, tester: str, episode: str | None
    ) -> SimulatedWafer:
        cfg = self.config
        draw = float(self._rng.random())
        if episode and draw < 0.8:
            forced: tuple[str, ...] | None = (cfg.excursion_pattern,)
        elif draw < cfg.pattern_rate:
            forced = None  # let the generator pick a pattern mix
        else:
            forced = ()
        synth = self._bounded(index, forced)
        end = self.start + timedelta(seconds=30 * index)
        ctx = WaferContext(
            lot_id=lot_id,
            wafer_id=f"{lot_id}-W{slot:02d}",
            product=product,
            tester=tester,
            test_program=f"{product}_FT",
            test_program_rev="r3",
            facility="FAB7",
            test_head=1,
            start_time=end - timedelta(minutes=20),
            end_time=end,
            die_width_mm=300.0 / max(synth.dies.shape) * 0.9,
            die_height_mm=300.0 / max(synth.dies.shape) * 0.9,
        )
        event = wafer_completed_event(ctx, synth.dies)
        return SimulatedWafer(event, synth.dies, synth.die_labels, synth.patterns, episode)

    def _bounded(self, index: int, forced: tuple[str, ...] | None) -> Any:
        """Generate a map no larger than ``max_side`` per side (re-draw otherwise)."""
        for attempt in range(50):
            synth = generate(self.config.seed, index * 50 + attempt, patterns=forced)
            if max(synth.dies.shape) <= self.config.max_side and (synth.dies == 2).any():
                return synth
        return synth


def publish_simulation(
    producer: Any,
    config: SimulationConfig,
    topic_spec: Any,
    rate_per_s: float = 0.0,
    truth_file: Path | None = None,
) -> list[SimulatedWafer]:
    """Publish the simulated wafers (optionally paced) and record their ground truth."""
    published: list[SimulatedWafer] = []
    truth = open(truth_file, "a") if truth_file else None  # noqa: SIM115 - closed below
    started = time.monotonic()
    try:
        for n, wafer in enumerate(FabSimulator(config).wafers()):
            if rate_per_s > 0:
                delay = started + n / rate_per_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            producer.send(topic_spec, wafer.event["lot_id"], wafer.event)
            published.append(wafer)
            if truth:
                truth.write(json.dumps(wafer.truth()) + "\n")
        producer.flush()
    finally:
        if truth:
            truth.close()
    log.info("simulation published", wafers=len(published))
    return published
