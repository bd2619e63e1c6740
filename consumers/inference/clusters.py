"""Turn a die-level label mask into defect clusters (pure: numpy, OpenCV, scikit-image).

Each systematic pattern's dies are split into 8-connected components; a
component whose shape shows several blobs joined by a thin neck (two
scratches crossing, two local clusters touching) is split again with a
distance-transform watershed. Clusters smaller than ``min_dies`` are dropped:
a pattern of one or two dies is noise, not something an FA engineer can act
on. Positions are given in die indices and, when the die size is known, in
millimetres from the wafer centre (x to the right, y up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from ml.taxonomy import PATTERNS, pattern_index

_RANDOM = pattern_index("Random")


@dataclass(frozen=True)
class WaferFrame:
    """Where the wafer centre is in grid units and how big a die is."""

    center_row: float
    center_col: float
    die_width_mm: float | None
    die_height_mm: float | None

    @classmethod
    def from_event(cls, dies: np.ndarray, geometry: dict[str, Any]) -> WaferFrame:
        """The event's centre if it gives one, else the middle of the dies' bounding box."""
        center_row, center_col = geometry.get("center_y"), geometry.get("center_x")
        if not (center_row and center_col):
            on = dies > 0
            rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
            default_row = (rows[0] + rows[-1]) / 2 if len(rows) else dies.shape[0] / 2
            default_col = (cols[0] + cols[-1]) / 2 if len(cols) else dies.shape[1] / 2
            center_row, center_col = center_row or default_row, center_col or default_col
        return cls(
            center_row=float(center_row),
            center_col=float(center_col),
            die_width_mm=geometry.get("die_width_mm"),
            die_height_mm=geometry.get("die_height_mm"),
        )

    def to_mm(self, row: float, col: float) -> tuple[float | None, float | None]:
        if not self.die_width_mm or not self.die_height_mm:
            return None, None
        return (
            round((col - self.center_col) * self.die_width_mm, 3),
            round((self.center_row - row) * self.die_height_mm, 3),
        )


def find_clusters(
    die_labels: np.ndarray, dies: np.ndarray, frame: WaferFrame, min_dies: int
) -> list[dict[str, Any]]:
    """Clusters as ``Cluster`` Avro records, largest first."""
    total = max(int(np.count_nonzero(dies)), 1)
    dies_per_code = np.bincount(die_labels.ravel(), minlength=len(PATTERNS))
    clusters: list[dict[str, Any]] = []
    for code in np.flatnonzero(dies_per_code >= min_dies):
        if code == 0 or code == _RANDOM:
            continue  # isolated fails are not clusters
        mask = (die_labels == code).astype(np.uint8)
        for component, origin in _components(mask, min_dies):
            count = int(np.count_nonzero(component))
            if count >= min_dies:
                clusters.append(
                    _describe(component, origin, PATTERNS[int(code)], count, total, frame)
                )
    clusters.sort(key=lambda c: -c["die_count"])
    return clusters


#: A component is cut out with this many dies of margin: more than the
#: watershed's peak spacing, so peak detection near the cut edge sees exactly
#: what it would see in the whole grid.
_MARGIN = 4


def _components(mask: np.ndarray, min_dies: int) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """8-connected components (split where blobs touch) with their grid offsets.

    Each component is cut out of the grid (its bounding box plus a margin), so
    the per-component work scales with the component, not with the wafer. A
    component below ``min_dies`` is skipped before it is even cut out:
    splitting it could only give smaller parts, which would be dropped too.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    rows, cols = mask.shape
    parts: list[tuple[np.ndarray, tuple[int, int]]] = []
    for label in range(1, count):
        left, top, width, height, area = (int(v) for v in stats[label])
        if area < min_dies:
            continue
        r0, c0 = max(top - _MARGIN, 0), max(left - _MARGIN, 0)
        r1, c1 = min(top + height + _MARGIN, rows), min(left + width + _MARGIN, cols)
        component = labels[r0:r1, c0:c1] == label
        parts.extend((part, (r0, c0)) for part in _split_touching(component))
    return parts


#: A watershed core must lie deeper than this many dies inside its component.
_CORE_DEPTH = 2.0


def _split_touching(component: np.ndarray) -> list[np.ndarray]:
    """Watershed on the distance transform: one region per well-separated core."""
    if np.count_nonzero(component) < 12:
        return [component]
    distance = ndi.distance_transform_edt(component)
    if distance.max() <= _CORE_DEPTH:
        return [component]  # thin (a scratch, a ring): no core, so nothing to split
    peaks = peak_local_max(distance, min_distance=3, threshold_abs=_CORE_DEPTH, labels=component)
    if len(peaks) < 2:
        return [component]
    markers = np.zeros(component.shape, dtype=np.int32)
    for i, (r, c) in enumerate(peaks, start=1):
        markers[r, c] = i
    regions = watershed(-distance, markers, mask=component)
    return [regions == i for i in range(1, len(peaks) + 1) if (regions == i).any()]


def _describe(
    component: np.ndarray,
    origin: tuple[int, int],
    pattern: str,
    count: int,
    total: int,
    frame: WaferFrame,
) -> dict[str, Any]:
    """One ``Cluster`` record; ``origin`` is the grid index of the cut-out's corner."""
    row0, col0 = origin
    rows, cols = np.nonzero(component)
    rows += row0
    cols += col0
    row_c, col_c = float(rows.sum()) / count, float(cols.sum()) / count
    x_mm, y_mm = frame.to_mm(row_c, col_c)
    contours, _ = cv2.findContours(
        component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
        offset=(col0, row0),
    )
    outline = max(contours, key=cv2.contourArea)
    # Perimeter of the die squares, not of the centre points: pad by one die.
    perimeter = float(cv2.arcLength(outline, True)) + 4.0
    compactness = min(1.0, 4 * math.pi * count / perimeter**2)
    polygon = outline[:, 0, ::-1].astype(float).tolist()  # (x, y) points -> [row, col]
    return {
        "pattern": pattern,
        "die_count": count,
        "area_fraction": round(count / total, 6),
        "centroid_row": round(row_c, 3),
        "centroid_col": round(col_c, 3),
        "centroid_x_mm": x_mm,
        "centroid_y_mm": y_mm,
        "bbox": [int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())],
        "compactness": round(compactness, 4),
        "polygon": polygon,
    }
