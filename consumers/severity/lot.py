"""Lot rules: repeated systematic patterns and low lot yield (pure, no I/O).

The lot state is a JSON-able dict because it is stored as a JSON document
(``lot_state.state``). Wafers are keyed by wafer id and remember the event id
that produced them, so a replayed event changes nothing and a retest or a
backfill with another model replaces the wafer instead of counting it twice.
Excursions already emitted are remembered per ``cause/pattern`` key, which is
what makes them once-per-lot-and-cause.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from consumers.severity.config import SeveritySettings
from ml.taxonomy import SYSTEMATIC_PATTERNS

Cause = Literal["REPEATED_PATTERN", "LOW_YIELD"]
LotState = dict[str, Any]


@dataclass(frozen=True)
class WaferFacts:
    """What the lot rules need from one assessed wafer."""

    event_id: str
    wafer_id: str
    product: str
    yield_pct: float
    systematic_patterns: tuple[str, ...]


@dataclass(frozen=True)
class Baseline:
    """A product's rolling lot-yield baseline (percent) over ``lots`` recent lots."""

    mean_pct: float
    std_pct: float
    lots: int


@dataclass(frozen=True)
class Excursion:
    """An excursion verdict, before it becomes an event and a row."""

    cause: Cause
    pattern: str | None
    wafer_ids: tuple[str, ...]
    lot_yield_pct: float | None
    baseline_yield_pct: float | None
    z_score: float | None
    detail: str

    @property
    def key(self) -> str:
        return excursion_key(self.cause, self.pattern)


def excursion_key(cause: str, pattern: str | None) -> str:
    return f"{cause}/{pattern or ''}"


def systematic_patterns(
    patterns: Sequence[str], label: str, probs: Mapping[str, float], min_probability: float
) -> tuple[str, ...]:
    """The systematic patterns a wafer confidently shows.

    Named by the model (its multi-label set, else its top-1 label) *and* at
    least ``min_probability`` likely: serving always names a defect top-1
    label, even a 0.4 guess on a clean wafer, and three such guesses in a lot
    must not page FA with a repeated-pattern excursion.
    """
    named = set(patterns) or {label}
    return tuple(sorted(
        p for p in named if p in SYSTEMATIC_PATTERNS and probs.get(p, 0.0) >= min_probability
    ))


def record_wafer(state: LotState | None, wafer: WaferFacts) -> tuple[LotState, bool]:
    """The lot state with ``wafer`` in it, and whether anything changed (False = replay)."""
    current: LotState = state or {"product": wafer.product, "wafers": {}, "emitted": []}
    seen = current["wafers"].get(wafer.wafer_id)
    if seen is not None and seen["event_id"] == wafer.event_id:
        return current, False
    wafers = {
        **current["wafers"],
        wafer.wafer_id: {
            "event_id": wafer.event_id,
            "yield_pct": wafer.yield_pct,
            "patterns": list(wafer.systematic_patterns),
        },
    }
    return {**current, "wafers": wafers}, True


def mark_emitted(state: LotState, key: str) -> LotState:
    if key in state["emitted"]:
        return state
    return {**state, "emitted": [*state["emitted"], key]}


def mean_yield_pct(state: LotState) -> float:
    return statistics.fmean(w["yield_pct"] for w in state["wafers"].values())


def pattern_wafers(state: LotState) -> dict[str, list[str]]:
    """Systematic pattern -> the (sorted) wafer ids of this lot that show it."""
    by_pattern: dict[str, list[str]] = {}
    for wafer_id, wafer in sorted(state["wafers"].items()):
        for pattern in wafer["patterns"]:
            by_pattern.setdefault(pattern, []).append(wafer_id)
    return by_pattern


def baseline_from_yields(lot_yields_pct: Sequence[float], config: SeveritySettings) -> Baseline | None:
    """Rolling mean/std of other lots' mean yields; None until enough lots exist."""
    if len(lot_yields_pct) < config.baseline_min_lots:
        return None
    return Baseline(
        mean_pct=statistics.fmean(lot_yields_pct),
        std_pct=max(statistics.stdev(lot_yields_pct), config.baseline_min_std_pct),
        lots=len(lot_yields_pct),
    )


def needs_baseline(state: LotState, config: SeveritySettings) -> bool:
    """Whether the low-yield rule can still fire (so the baseline is worth a query)."""
    return (
        len(state["wafers"]) >= config.min_wafers_for_yield
        and excursion_key("LOW_YIELD", None) not in state["emitted"]
    )


def new_excursions(
    state: LotState, baseline: Baseline | None, config: SeveritySettings
) -> list[Excursion]:
    """Excursions this lot now qualifies for and has not emitted yet."""
    found: list[Excursion] = []
    for pattern, wafer_ids in sorted(pattern_wafers(state).items()):
        if len(wafer_ids) >= config.repeat_wafers_k:
            found.append(Excursion(
                "REPEATED_PATTERN", pattern, tuple(wafer_ids), None, None, None,
                f"{len(wafer_ids)} wafers show {pattern} (threshold {config.repeat_wafers_k})",
            ))
    if baseline is not None and needs_baseline(state, config):
        lot_yield = mean_yield_pct(state)
        z = (lot_yield - baseline.mean_pct) / baseline.std_pct
        if z < -config.low_yield_z and math.isfinite(z):
            found.append(Excursion(
                "LOW_YIELD", None, tuple(sorted(state["wafers"])), lot_yield, baseline.mean_pct, z,
                f"lot mean yield {lot_yield:.2f}% is {-z:.2f} std below the product baseline "
                f"{baseline.mean_pct:.2f}% (+/-{baseline.std_pct:.2f}, {baseline.lots} lots)",
            ))
    return [e for e in found if e.key not in state["emitted"]]
