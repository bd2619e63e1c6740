"""Wafer metrics from the die map, the clusters and the geometry (pure: numpy only).

Units are part of every name: percentages are 0-100, ratios 0-1, density is
failing dies per cm^2 of tested area, distances are millimetres. Coordinates
follow the cluster convention of the inference worker: x grows with the grid
column, y grows *upwards* (towards row 0), both measured from the wafer centre.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml.taxonomy import SYSTEMATIC_PATTERNS
from schemas.diemap import FAIL, NO_DIE, PASS
from schemas.errors import InvalidEvent

MM2_PER_CM2 = 100.0


@dataclass(frozen=True)
class WaferMetrics:
    """One wafer's metrics; field names match the ``WaferAssessed`` record."""

    total_dies: int
    failing_dies: int
    affected_dies: int
    yield_pct: float
    coverage_pct: float
    defect_density_per_cm2: float | None
    edge_ratio: float
    quadrant_fail_counts: tuple[int, int, int, int]  # [UR, UL, LL, LR]
    dominant_pattern: str
    cluster_count: int


@dataclass(frozen=True)
class _Frame:
    """Die centres in mm (or in die pitches when the geometry has no scale) and the radius."""

    x: np.ndarray
    y: np.ndarray
    radius: float
    scaled: bool


def compute_metrics(
    dies: np.ndarray,
    clusters: Sequence[Mapping[str, Any]],
    geometry: Mapping[str, Any],
    label: str,
    edge_band_mm: float,
    edge_band_fraction: float,
) -> WaferMetrics:
    """All metrics of one wafer.

    ``clusters`` are ``Cluster`` records (``pattern``, ``die_count``); only
    systematic ones count as affected dies. ``edge_band_fraction`` of the
    radius replaces ``edge_band_mm`` when neither die size nor diameter give
    the grid a physical scale.
    """
    on_wafer = dies != NO_DIE
    failing = dies == FAIL
    total = int(on_wafer.sum())
    if not total:
        raise InvalidEvent("die map has no dies: nothing to assess")
    n_fail = int(failing.sum())
    affected_by_pattern = _affected_by_pattern(clusters)
    affected = min(sum(affected_by_pattern.values()), n_fail)
    frame = _frame(dies, geometry)
    band = edge_band_mm if frame.scaled else edge_band_fraction * frame.radius
    return WaferMetrics(
        total_dies=total,
        failing_dies=n_fail,
        affected_dies=affected,
        yield_pct=_pct(int((dies == PASS).sum()), total),
        coverage_pct=_pct(affected, total),
        defect_density_per_cm2=_density(n_fail, total, geometry),
        edge_ratio=_edge_ratio(failing, frame, band, n_fail),
        quadrant_fail_counts=_quadrants(failing, frame),
        dominant_pattern=_dominant(affected_by_pattern, label),
        cluster_count=len(clusters),
    )


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _affected_by_pattern(clusters: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for cluster in clusters:
        if cluster["pattern"] in SYSTEMATIC_PATTERNS:
            counts[cluster["pattern"]] = counts.get(cluster["pattern"], 0) + int(cluster["die_count"])
    return counts


def _dominant(affected_by_pattern: Mapping[str, int], label: str) -> str:
    """Most affected dies wins (ties: alphabetical, so the result is deterministic)."""
    if affected_by_pattern:
        return min(affected_by_pattern, key=lambda p: (-affected_by_pattern[p], p))
    return label or "none"


def _density(n_fail: int, total: int, geometry: Mapping[str, Any]) -> float | None:
    """Failing dies per cm^2 of tested area (total dies x die area); None without die size."""
    width, height = geometry.get("die_width_mm"), geometry.get("die_height_mm")
    if not width or not height or not total:
        return None
    return n_fail / (total * width * height / MM2_PER_CM2)


def _frame(dies: np.ndarray, geometry: Mapping[str, Any]) -> _Frame:
    """Die-centre coordinates relative to the wafer centre, and the wafer radius.

    Centre: the geometry's ``center_x``/``center_y`` (grid units) or the middle
    of the on-wafer dies' bounding box. Pitch: the die size; without it the
    diameter spread over the grid extent; without either, one die pitch is the
    unit (``scaled`` is False). Radius: half the diameter, else the farthest
    die centre plus half a pitch diagonal (the outer corner of that die).
    """
    on = np.argwhere(dies != NO_DIE)
    rows_on, cols_on = on[:, 0], on[:, 1]
    center_row = _given(geometry, "center_y", (rows_on.min() + rows_on.max()) / 2)
    center_col = _given(geometry, "center_x", (cols_on.min() + cols_on.max()) / 2)
    diameter = geometry.get("diameter_mm")
    width, height = geometry.get("die_width_mm"), geometry.get("die_height_mm")
    scaled = True
    if not (width and height):
        if diameter:
            extent = max(int(np.ptp(rows_on)), int(np.ptp(cols_on))) + 1
            width = height = diameter / extent
        else:
            width = height = 1.0
            scaled = False
    grid_rows, grid_cols = np.indices(dies.shape)
    x = (grid_cols - center_col) * width
    y = (center_row - grid_rows) * height
    if diameter:
        radius = diameter / 2
    else:
        reach = np.hypot(x[dies != NO_DIE], y[dies != NO_DIE]).max()
        radius = float(reach) + math.hypot(width, height) / 2
    return _Frame(x=x, y=y, radius=radius, scaled=scaled)


def _given(geometry: Mapping[str, Any], key: str, default: float) -> float:
    value = geometry.get(key)
    return float(default if value is None else value)


def _edge_ratio(failing: np.ndarray, frame: _Frame, band: float, n_fail: int) -> float:
    """Share of failing dies whose centre lies within ``band`` of the wafer edge."""
    if not n_fail:
        return 0.0
    distance_to_edge = frame.radius - np.hypot(frame.x, frame.y)
    return int((failing & (distance_to_edge <= band)).sum()) / n_fail


def _quadrants(failing: np.ndarray, frame: _Frame) -> tuple[int, int, int, int]:
    """Failing dies per quadrant [UR, UL, LL, LR]; dies on an axis go right / up."""
    right, up = frame.x >= 0, frame.y >= 0
    return (
        int((failing & right & up).sum()),
        int((failing & ~right & up).sum()),
        int((failing & ~right & ~up).sum()),
        int((failing & right & ~up).sum()),
    )
