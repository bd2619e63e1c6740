"""Configuration of the severity processor (weights, thresholds, lot rules).

Kept as its own pydantic model so the numbers an FA team tunes live in
configuration (``WAFERSTREAM_SEVERITY__*`` once this is ``Settings.severity``),
never in code. Validators reject combinations that would make the score
meaningless (weights not summing to one, unordered level thresholds).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ml.taxonomy import DEFECT_PATTERNS

#: Severity levels, lowest first.
SeverityLevel = Literal["INFO", "MINOR", "MAJOR", "CRITICAL"]
LEVELS: tuple[SeverityLevel, ...] = get_args(SeverityLevel)


class SeverityWeights(BaseModel):
    """Weights of the normalized components; they must sum to 1 so the score spans 0-100."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    density: float = Field(0.4, ge=0)
    coverage: float = Field(0.3, ge=0)
    clusters: float = Field(0.3, ge=0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SeverityWeights:
        total = self.density + self.coverage + self.clusters
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"severity weights must sum to 1, got {total}")
        return self


class SeveritySettings(BaseModel):
    """Everything the severity processor reads from configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weights: SeverityWeights = SeverityWeights()
    density_saturation_per_cm2: float = Field(
        2.0, gt=0, description="defect density (fails/cm^2) that scores the full density weight"
    )
    coverage_saturation_pct: float = Field(
        20.0, gt=0, description="affected-die coverage (%) that scores the full coverage weight"
    )
    cluster_saturation: int = Field(
        5, gt=0, description="cluster count that scores the full cluster weight"
    )
    minor_above: float = Field(20.0, ge=0, le=100, description="score > this -> MINOR")
    major_above: float = Field(50.0, ge=0, le=100, description="score > this -> MAJOR")
    critical_above: float = Field(80.0, ge=0, le=100, description="score > this -> CRITICAL")
    pattern_min_level: dict[str, SeverityLevel] = Field(
        default_factory=dict,
        description=(
            "minimum level per dominant pattern, e.g. {\"Scratch\": \"CRITICAL\"}: a pattern FA "
            "must see whatever its size (handling damage) is not left to the score"
        ),
    )
    edge_band_mm: float = Field(
        5.0, ge=0, description="failing dies whose centre is this close to the wafer edge count as edge"
    )
    edge_band_fraction: float = Field(
        0.1, ge=0, le=1,
        description="edge band as a fraction of the radius when the geometry has no physical scale",
    )
    repeat_wafers_k: int = Field(
        3, ge=2, description="wafers of one lot with the same systematic pattern -> excursion"
    )
    repeat_min_probability: float = Field(
        0.5, ge=0, le=1,
        description="a wafer counts toward a repeated pattern only with this calibrated probability",
    )
    low_yield_z: float = Field(
        3.0, gt=0, description="lot mean yield this many baseline std below the product mean -> excursion"
    )
    min_wafers_for_yield: int = Field(
        5, ge=1, description="a lot's mean yield is judged only once it has this many wafers"
    )
    baseline_window_lots: int = Field(
        50, ge=2, description="rolling baseline: the product's most recent N other lots"
    )
    baseline_min_lots: int = Field(
        5, ge=2, description="no low-yield verdict before the baseline has this many lots"
    )
    baseline_min_std_pct: float = Field(
        0.5, gt=0, description="floor for the baseline std, so identical lots cannot give z=-inf"
    )

    @model_validator(mode="after")
    def _ordered_levels(self) -> SeveritySettings:
        if not self.minor_above <= self.major_above <= self.critical_above:
            raise ValueError("level thresholds must satisfy minor <= major <= critical")
        unknown = sorted(set(self.pattern_min_level) - set(DEFECT_PATTERNS))
        if unknown:
            raise ValueError(f"pattern_min_level: unknown patterns {unknown} (use {DEFECT_PATTERNS})")
        if self.baseline_min_lots > self.baseline_window_lots:
            raise ValueError("baseline_min_lots cannot exceed baseline_window_lots")
        return self
