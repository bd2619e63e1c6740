"""Cluster finding on hand-built die-label grids (no model, no Kafka, no DB).

Every expected figure is worked out by hand from the grids below: a 20x20
wafer of 5 mm x 5 mm dies whose centre is die (10, 10).
"""

from __future__ import annotations

import numpy as np

from consumers.inference.clusters import WaferFrame, find_clusters
from ml.taxonomy import pattern_index

SIDE = 20
GEOMETRY = {"die_width_mm": 5.0, "die_height_mm": 5.0, "center_x": 10.0, "center_y": 10.0}
LOC, SCRATCH, RANDOM = pattern_index("Loc"), pattern_index("Scratch"), pattern_index("Random")


def _wafer() -> tuple[np.ndarray, np.ndarray]:
    """All dies present and passing; no labels yet."""
    dies = np.ones((SIDE, SIDE), dtype=np.uint8)
    return dies, np.zeros((SIDE, SIDE), dtype=np.uint8)


def _clusters(labels: np.ndarray, dies: np.ndarray, min_dies: int = 3) -> list[dict]:  # type: ignore[type-arg]
    frame = WaferFrame.from_event(dies, GEOMETRY)
    return find_clusters(labels, dies, frame, min_dies)


def test_a_block_is_one_cluster_with_its_position_in_dies_and_mm() -> None:
    dies, labels = _wafer()
    labels[2:5, 12:16] = LOC  # rows 2-4, cols 12-15: 12 dies
    (cluster,) = _clusters(labels, dies)
    assert cluster["pattern"] == "Loc"
    assert cluster["die_count"] == 12
    assert cluster["area_fraction"] == round(12 / 400, 6)
    assert (cluster["centroid_row"], cluster["centroid_col"]) == (3.0, 13.5)
    # x: (13.5 - 10) * 5 mm to the right; y: (10 - 3) * 5 mm up.
    assert (cluster["centroid_x_mm"], cluster["centroid_y_mm"]) == (17.5, 35.0)
    assert cluster["bbox"] == [2, 12, 4, 15]
    # Outline through the corner die centres, perimeter of the die squares 2*(3+4) = 14.
    assert sorted(map(tuple, cluster["polygon"])) == [(2, 12), (2, 15), (4, 12), (4, 15)]
    assert cluster["compactness"] == round(4 * np.pi * 12 / 14**2, 4)


def test_patterns_are_separate_clusters_largest_first_and_random_is_never_one() -> None:
    dies, labels = _wafer()
    labels[1, 1:9] = SCRATCH  # a line of 8
    labels[12:16, 12:16] = LOC  # a 4x4 block of 16
    labels[8:12, 2:6] = RANDOM  # many random fails together are still not a cluster
    clusters = _clusters(labels, dies)
    assert [(c["pattern"], c["die_count"]) for c in clusters] == [("Loc", 16), ("Scratch", 8)]


def test_components_below_the_die_threshold_are_dropped() -> None:
    dies, labels = _wafer()
    labels[3, 3:5] = LOC  # 2 dies
    labels[10:12, 10:12] = LOC  # 4 dies
    assert [c["die_count"] for c in _clusters(labels, dies, min_dies=3)] == [4]
    assert [c["die_count"] for c in _clusters(labels, dies, min_dies=2)] == [4, 2]
    assert _clusters(labels, dies, min_dies=5) == []


def test_two_blobs_joined_by_a_thin_neck_are_split() -> None:
    dies, labels = _wafer()
    labels[2:9, 1:8] = LOC  # 7x7 block, core depth 4
    labels[2:9, 11:18] = LOC  # another 7x7 block
    labels[5, 8:11] = LOC  # a one-die neck between them (3 dies)
    clusters = _clusters(labels, dies)
    assert len(clusters) == 2
    assert sum(c["die_count"] for c in clusters) == 2 * 49 + 3
    left, right = sorted(clusters, key=lambda c: c["bbox"][1])
    # Each block keeps all of its own dies, the neck is shared out between them.
    assert left["die_count"] >= 49 and right["die_count"] >= 49
    assert left["bbox"][1] == 1 and right["bbox"][3] == 17
    assert left["bbox"][3] < right["bbox"][1]
    assert all(c["pattern"] == "Loc" for c in clusters)


def test_a_thin_ring_is_not_split_and_a_cluster_on_the_grid_edge_is_kept() -> None:
    dies, labels = _wafer()
    labels[0, :] = SCRATCH  # a full-width line on the grid's first row
    labels[5:15, 5] = LOC  # a hollow 10x10 square outline: no core, so one cluster
    labels[5:15, 14] = LOC
    labels[5, 5:15] = LOC
    labels[14, 5:15] = LOC
    clusters = _clusters(labels, dies)
    assert [(c["pattern"], c["die_count"]) for c in clusters] == [("Loc", 36), ("Scratch", 20)]
    assert clusters[1]["bbox"] == [0, 0, 0, 19]


def test_without_a_die_size_positions_are_in_dies_only() -> None:
    dies, labels = _wafer()
    labels[4:7, 4:7] = LOC
    frame = WaferFrame.from_event(dies, {"die_width_mm": None, "die_height_mm": None})
    (cluster,) = find_clusters(labels, dies, frame, 3)
    assert (cluster["centroid_x_mm"], cluster["centroid_y_mm"]) == (None, None)
    assert (cluster["centroid_row"], cluster["centroid_col"]) == (5.0, 5.0)
    # No centre given: the middle of the dies' bounding box, (19 / 2, 19 / 2).
    assert (frame.center_row, frame.center_col) == (9.5, 9.5)
