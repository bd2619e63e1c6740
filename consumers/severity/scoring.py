"""Severity score 0-100 and level from wafer metrics (pure; formula in docs/severity.md).

    score = 100 * ( w_d * min(1, density / S_d)
                  + w_c * min(1, coverage_pct / S_c)
                  + w_n * min(1, cluster_count / S_n) )

Each component is normalized to 0..1 by a configured saturation, so one
extreme metric cannot exceed its weight, and the weights sum to 1. A wafer
without die size has no density: its density term is 0 (the score is a
lower bound, never inflated by a guess). Levels are open-below bands:
score > critical_above is CRITICAL, > major_above MAJOR, > minor_above MINOR.
A configured floor for the wafer's dominant pattern (``pattern_min_level``)
can raise the level, never lower it; the score stays what the formula says,
so the two together show that a floor, not the size, made the level.
"""

from __future__ import annotations

from dataclasses import dataclass
from consumers.severity.config import LEVELS, SeverityLevel, SeveritySettings
from consumers.severity.metrics import WaferMetrics


@dataclass(frozen=True)
class Severity:
    score: float
    level: SeverityLevel


def _saturate(value: float, saturation: float) -> float:
    return min(1.0, max(0.0, value) / saturation)


def severity_score(metrics: WaferMetrics, config: SeveritySettings) -> float:
    """The weighted, saturated score in 0..100, rounded to 0.01."""
    w = config.weights
    density = metrics.defect_density_per_cm2 or 0.0
    score = 100.0 * (
        w.density * _saturate(density, config.density_saturation_per_cm2)
        + w.coverage * _saturate(metrics.coverage_pct, config.coverage_saturation_pct)
        + w.clusters * _saturate(metrics.cluster_count, config.cluster_saturation)
    )
    return round(score, 2)


def severity_level(score: float, config: SeveritySettings) -> SeverityLevel:
    if score > config.critical_above:
        return "CRITICAL"
    if score > config.major_above:
        return "MAJOR"
    if score > config.minor_above:
        return "MINOR"
    return "INFO"


def assess(metrics: WaferMetrics, config: SeveritySettings) -> Severity:
    score = severity_score(metrics, config)
    level = severity_level(score, config)
    floor = config.pattern_min_level.get(metrics.dominant_pattern)
    if floor is not None and LEVELS.index(floor) > LEVELS.index(level):
        level = floor
    return Severity(score=score, level=level)
