"""Severity metrics, score and lot rules on hand-computed small wafers (no Kafka, no DB).

The reference wafer is a 5x5 grid of 10 mm x 10 mm dies (1 cm^2 each) on a
50 mm wafer: the centre is die (2, 2), die centres sit 10 mm apart, the edge
is 25 mm from the centre, so with a 5 mm band exactly the dies 20 mm or more
from the centre are "edge".
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pydantic import ValidationError

from consumers.severity.config import SeveritySettings, SeverityWeights
from consumers.severity.lot import (
    WaferFacts,
    baseline_from_yields,
    new_excursions,
    record_wafer,
    systematic_patterns,
)
from consumers.severity.metrics import WaferMetrics, compute_metrics
from consumers.severity.scoring import assess, severity_level, severity_score
from schemas.errors import InvalidEvent

GEOMETRY = {"diameter_mm": 50.0, "die_width_mm": 10.0, "die_height_mm": 10.0}


def _wafer(fails: list[tuple[int, int]]) -> np.ndarray:
    dies = np.ones((5, 5), dtype=np.uint8)
    for row, col in fails:
        dies[row, col] = 2
    return dies


def _cluster(pattern: str, count: int) -> dict:  # type: ignore[type-arg]
    return {"pattern": pattern, "die_count": count}


def _metrics(dies: np.ndarray, clusters: list, geometry: dict = GEOMETRY, label: str = "none",  # type: ignore[type-arg]
             band_fraction: float = 0.1) -> WaferMetrics:
    return compute_metrics(dies, clusters, geometry, label, edge_band_mm=5.0,
                           edge_band_fraction=band_fraction)


SCRATCH = [(2, c) for c in range(5)]  # the middle row, edge to edge
BLOB = [(r, c) for r in range(1, 4) for c in range(1, 4)]  # 3x3 around the centre


def test_scratch_line_metrics_by_hand() -> None:
    m = _metrics(_wafer(SCRATCH), [_cluster("Scratch", 5)], label="Scratch")
    assert (m.total_dies, m.failing_dies, m.affected_dies) == (25, 5, 5)
    assert m.yield_pct == pytest.approx(80.0)
    assert m.coverage_pct == pytest.approx(20.0)
    assert m.defect_density_per_cm2 == pytest.approx(5 / 25)  # 5 fails on 25 cm^2
    assert m.edge_ratio == pytest.approx(2 / 5)  # the two end dies are 20 mm out
    assert m.quadrant_fail_counts == (3, 2, 0, 0)  # on the x axis -> upper; x=0 -> right
    assert (m.dominant_pattern, m.cluster_count) == ("Scratch", 1)


def test_center_blob_is_not_edge_and_fills_all_quadrants() -> None:
    m = _metrics(_wafer(BLOB), [_cluster("Center", 9)])
    assert (m.failing_dies, m.affected_dies) == (9, 9)
    assert m.coverage_pct == pytest.approx(36.0)
    assert m.edge_ratio == 0.0  # farthest blob die is 14.1 mm out, band starts at 20 mm
    assert m.quadrant_fail_counts == (4, 2, 1, 2)
    assert sum(m.quadrant_fail_counts) == m.failing_dies
    assert m.dominant_pattern == "Center"


def test_clean_wafer_is_all_zeros_and_has_no_pattern() -> None:
    m = _metrics(_wafer([]), [])
    assert (m.failing_dies, m.affected_dies, m.cluster_count) == (0, 0, 0)
    assert (m.yield_pct, m.coverage_pct, m.edge_ratio) == (100.0, 0.0, 0.0)
    assert m.defect_density_per_cm2 == 0.0
    assert m.quadrant_fail_counts == (0, 0, 0, 0)
    assert m.dominant_pattern == "none"
    assert assess(m, SeveritySettings()).score == 0.0


def test_a_map_without_dies_is_invalid() -> None:
    with pytest.raises(InvalidEvent):
        _metrics(np.zeros((3, 3), dtype=np.uint8), [])


def test_density_units_follow_the_die_area() -> None:
    dies = _wafer(SCRATCH)
    small = {**GEOMETRY, "die_width_mm": 5.0, "die_height_mm": 2.0}  # 0.1 cm^2 dies
    assert _metrics(dies, [], small).defect_density_per_cm2 == pytest.approx(5 / 2.5)
    assert _metrics(dies, [], {"diameter_mm": 50.0}).defect_density_per_cm2 is None


def test_edge_band_uses_the_grid_when_geometry_has_no_scale() -> None:
    dies = _wafer(SCRATCH)
    # Only a diameter: pitch = 50 mm / 5 dies = 10 mm, same answer as with die size.
    assert _metrics(dies, [], {"diameter_mm": 50.0}).edge_ratio == pytest.approx(0.4)
    # No scale: radius = farthest die centre (2*sqrt(2) pitches) + half a die diagonal
    # = 3.536 pitches; the end dies are 2 pitches out, 1.536 from the edge.
    assert _metrics(dies, [], {}, band_fraction=0.4).edge_ratio == 0.0  # band 1.414
    assert _metrics(dies, [], {}, band_fraction=0.5).edge_ratio == pytest.approx(0.4)  # 1.768


def test_random_clusters_are_not_affected_and_the_largest_pattern_dominates() -> None:
    dies = _wafer(SCRATCH + [(0, 0), (0, 1), (4, 4)])
    m = _metrics(dies, [_cluster("Loc", 2), _cluster("Scratch", 5), _cluster("Random", 1)],
                 label="Loc")
    assert (m.failing_dies, m.affected_dies, m.cluster_count) == (8, 7, 3)
    assert m.dominant_pattern == "Scratch"
    assert _metrics(dies, [], label="Random").dominant_pattern == "Random"


def test_worked_example_of_the_docs() -> None:
    m = _metrics(_wafer(SCRATCH), [_cluster("Scratch", 5)])
    # 100 * (0.4 * 0.2/2 + 0.3 * 20/20 + 0.3 * 1/5) = 100 * (0.04 + 0.30 + 0.06)
    assert severity_score(m, SeveritySettings()) == pytest.approx(40.0)
    assert assess(m, SeveritySettings()).level == "MINOR"


def _synthetic(density: float, coverage: float, clusters: int) -> WaferMetrics:
    return WaferMetrics(100, 10, 5, 90.0, coverage, density, 0.0, (0, 0, 0, 0), "Loc", clusters)


def test_score_is_monotonic_in_every_component_and_bounded() -> None:
    config = SeveritySettings()
    steps = [0.0, 0.5, 1.0, 3.0, 10.0]
    for d, c, n in itertools.product(steps, [0.0, 5.0, 20.0, 60.0], [0, 1, 3, 9]):
        base = severity_score(_synthetic(d, c, n), config)
        assert 0.0 <= base <= 100.0
        assert severity_score(_synthetic(d + 0.5, c, n), config) >= base
        assert severity_score(_synthetic(d, c + 5.0, n), config) >= base
        assert severity_score(_synthetic(d, c, n + 1), config) >= base
    assert severity_score(_synthetic(99.0, 99.0, 99), config) == 100.0
    assert severity_score(_synthetic(1.0, 10.0, 2), config) > severity_score(
        _synthetic(1.0, 10.0, 1), config)


def test_levels_and_weights_come_from_configuration() -> None:
    default = SeveritySettings()
    assert [severity_level(s, default) for s in (20.0, 20.01, 50.0, 80.0, 80.01)] == [
        "INFO", "MINOR", "MINOR", "MAJOR", "CRITICAL"]
    strict = SeveritySettings(minor_above=5, major_above=10, critical_above=30)
    m = _metrics(_wafer(SCRATCH), [_cluster("Scratch", 5)])
    assert assess(m, strict).level == "CRITICAL"
    coverage_only = SeveritySettings(weights=SeverityWeights(density=0, coverage=1, clusters=0))
    assert severity_score(m, coverage_only) == pytest.approx(100.0)
    with pytest.raises(ValidationError):
        SeverityWeights(density=0.5, coverage=0.5, clusters=0.5)


def test_a_pattern_floor_raises_the_level_but_never_lowers_it_or_the_score() -> None:
    scratch = _metrics(_wafer(SCRATCH), [_cluster("Scratch", 5)])  # MINOR 40.0 by the formula
    floored = SeveritySettings(pattern_min_level={"Scratch": "CRITICAL", "Center": "INFO"})
    result = assess(scratch, floored)
    assert (result.score, result.level) == (40.0, "CRITICAL")
    center = _metrics(_wafer(SCRATCH), [_cluster("Center", 5)])
    assert assess(center, floored).level == "MINOR"  # a floor below the score's level is moot
    assert assess(_metrics(_wafer(SCRATCH), [_cluster("Loc", 5)]), floored).level == "MINOR"
    with pytest.raises(ValidationError, match="unknown patterns"):
        SeveritySettings(pattern_min_level={"Scrach": "MAJOR"})
    with pytest.raises(ValidationError):
        SeveritySettings(pattern_min_level={"Scratch": "URGENT"})
    with pytest.raises(ValidationError):
        SeveritySettings(minor_above=60, major_above=50)


def _facts(wafer: str, patterns: tuple[str, ...] = ("Scratch",), yield_pct: float = 90.0,
           event: str | None = None) -> WaferFacts:
    return WaferFacts(event or f"e-{wafer}", wafer, "P1", yield_pct, patterns)


def test_repeated_pattern_fires_at_k_wafers_and_replays_do_not_count() -> None:
    config = SeveritySettings(repeat_wafers_k=3)
    state, changed = record_wafer(None, _facts("W1"))
    state, _ = record_wafer(state, _facts("W2"))
    assert changed
    replayed, changed = record_wafer(state, _facts("W2"))
    assert not changed and replayed == state
    retest, _ = record_wafer(state, _facts("W2", event="e-W2-retest"))
    assert len(retest["wafers"]) == 2  # a retest replaces the wafer, it is not a third one
    assert new_excursions(retest, None, config) == []
    state, _ = record_wafer(state, _facts("W3"))
    [excursion] = new_excursions(state, None, config)
    assert (excursion.cause, excursion.pattern, excursion.wafer_ids) == (
        "REPEATED_PATTERN", "Scratch", ("W1", "W2", "W3"))
    state = {**state, "emitted": [excursion.key]}
    state, _ = record_wafer(state, _facts("W4"))
    assert new_excursions(state, None, config) == []  # once per lot and cause


def test_systematic_patterns_exclude_random_and_fall_back_to_the_label() -> None:
    sure = {"Scratch": 0.9, "Loc": 0.7, "Center": 0.8, "Random": 0.9}
    assert systematic_patterns(["Random", "Scratch", "Loc"], "Scratch", sure, 0.5) == (
        "Loc", "Scratch")
    assert systematic_patterns([], "Center", sure, 0.5) == ("Center",)
    assert systematic_patterns(["Random"], "Random", sure, 0.5) == ()


def test_low_confidence_guesses_do_not_count_toward_a_repeated_pattern() -> None:
    # Serving names a defect top-1 label even when it is a 0.4 guess on a clean wafer.
    guess = {"none": 0.35, "Scratch": 0.42, "Loc": 0.55}
    assert systematic_patterns(["Scratch"], "Scratch", guess, 0.5) == ()
    assert systematic_patterns(["Scratch", "Loc"], "Loc", guess, 0.5) == ("Loc",)
    assert systematic_patterns(["Scratch"], "Scratch", guess, 0.4) == ("Scratch",)


def test_low_yield_against_the_rolling_baseline() -> None:
    config = SeveritySettings(min_wafers_for_yield=2, baseline_min_lots=3, low_yield_z=3.0)
    assert baseline_from_yields([90.0, 91.0], config) is None  # too few lots
    baseline = baseline_from_yields([90.0, 91.0, 89.0, 90.0], config)
    assert baseline is not None and baseline.mean_pct == pytest.approx(90.0)
    state, _ = record_wafer(None, _facts("W1", (), 84.0))
    assert new_excursions(state, baseline, config) == []  # one wafer is not a lot yet
    state, _ = record_wafer(state, _facts("W2", (), 86.0))
    [excursion] = new_excursions(state, baseline, config)
    assert excursion.cause == "LOW_YIELD"
    assert excursion.z_score == pytest.approx((85.0 - 90.0) / baseline.std_pct)
    healthy, _ = record_wafer(None, _facts("W1", (), 89.5))
    healthy, _ = record_wafer(healthy, _facts("W2", (), 90.5))
    assert new_excursions(healthy, baseline, config) == []
    flat = baseline_from_yields([90.0, 90.0, 90.0], config)
    assert flat is not None and flat.std_pct == config.baseline_min_std_pct
