"""Building the (hard_bins, dies) grid pair, shared by every reader.

Why one place: the pass/fail rule for a bin-coded map (a die passes when its
bin is a passing bin) and the dtype/sentinel conventions must be identical
whatever the input format, or the same wafer would give different maps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from producers.formats.model import FAIL, NO_BIN, NO_DIE, PASS, BinDefinition


def grid_from_points(
    points: Mapping[tuple[int, int], tuple[int, bool]],
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Lay out ``{(x, y): (hard_bin, passed)}`` on a grid anchored at min X / min Y.

    Returns ``(hard_bins, dies, origin_x, origin_y)``. An empty mapping gives
    0x0 grids anchored at (0, 0).
    """
    if not points:
        return np.full((0, 0), NO_BIN, np.int16), np.zeros((0, 0), np.uint8), 0, 0
    coords = np.array(list(points.keys()), dtype=np.int32)
    values = list(points.values())
    origin_x, origin_y = int(coords[:, 0].min()), int(coords[:, 1].min())
    cols = int(coords[:, 0].max()) - origin_x + 1
    rows = int(coords[:, 1].max()) - origin_y + 1
    r, c = coords[:, 1] - origin_y, coords[:, 0] - origin_x
    hard_bins = np.full((rows, cols), NO_BIN, np.int16)
    dies = np.zeros((rows, cols), np.uint8)
    hard_bins[r, c] = [bin_ for bin_, _ in values]
    dies[r, c] = [PASS if ok else FAIL for _, ok in values]
    return hard_bins, dies, origin_x, origin_y


def dies_from_bins(hard_bins: np.ndarray, bins: Iterable[BinDefinition]) -> np.ndarray:
    """Pass/fail map of a bin-coded grid: PASS where the bin is a passing bin.

    Bins without a definition count as failing: a die nobody declared good is
    not good.
    """
    passing = [b.number for b in bins if b.passed]
    dies = np.where(np.isin(hard_bins, passing), PASS, FAIL).astype(np.uint8)
    dies[hard_bins == NO_BIN] = NO_DIE
    return dies
