"""Avro events -> notifier subjects (the alert service's translation layer)."""

from __future__ import annotations

import numpy as np

from consumers.alerts.service import subject_from_assessed, subject_from_excursion
from tests.factories import sample_records


def test_assessed_event_becomes_a_wafer_subject_with_its_picture() -> None:
    event = sample_records()["wafer_assessed"]
    event["die_map"] = sample_records()["wafer_test_completed"]["die_map"]
    event["top_clusters"] = sample_records()["wafer_segmented"]["clusters"]
    rows, cols = event["die_map"]["rows"], event["die_map"]["cols"]
    labels = np.zeros((rows, cols), dtype=np.uint8)
    subject = subject_from_assessed(event, labels)
    assert subject.kind == "wafer" and subject.severity_level == "critical"
    assert subject.dies is not None and subject.dies.shape == (rows, cols)
    assert subject.die_labels is not None
    assert subject.top_clusters[0].centroid_mm == (-12.0, 3.5)
    # a mask that does not fit the map is dropped instead of failing the alert
    assert subject_from_assessed(event, np.zeros((2, 2), np.uint8)).die_labels is None


def test_each_lot_excursion_cause_is_its_own_dedup_unit() -> None:
    base = sample_records()["lot_excursion"]
    scratch = subject_from_excursion(base)
    loc = subject_from_excursion({**base, "pattern": "Loc", "detail": "3 wafers show Loc"})
    low_yield = subject_from_excursion({**base, "cause": "LOW_YIELD", "pattern": None})
    keys = {scratch.wafer_key, loc.wafer_key, low_yield.wafer_key}
    assert len(keys) == 3
    assert subject_from_excursion(base).wafer_key == scratch.wafer_key  # a replay dedups
    assert scratch.severity_level == "critical" and scratch.wafer_id is None
