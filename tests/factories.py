"""One valid sample record per event type, built the way the services build them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from producers.simulator import FabSimulator, SimulationConfig


def _envelope() -> dict[str, Any]:
    event_id = str(uuid.uuid4())
    return {
        "event_id": event_id,
        "schema_version": 1,
        "occurred_at": datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC),
        "correlation_id": event_id,
    }


def wafer_events(n: int, seed: int = 3, pattern_rate: float = 0.5) -> list[dict[str, Any]]:
    cfg = SimulationConfig(seed=seed, wafers=n, pattern_rate=pattern_rate)
    return [w.event for w in FabSimulator(cfg).wafers()]


def sample_records() -> dict[str, dict[str, Any]]:
    wafer = wafer_events(1)[0]
    cluster = {
        "pattern": "Scratch", "die_count": 12, "area_fraction": 0.02, "centroid_row": 10.5,
        "centroid_col": 7.25, "centroid_x_mm": -12.0, "centroid_y_mm": 3.5,
        "bbox": [4, 2, 17, 12], "compactness": 0.12, "polygon": [[4.0, 2.0], [17.0, 12.0]],
    }
    common = {"lot_id": wafer["lot_id"], "wafer_id": wafer["wafer_id"]}
    return {
        "wafer_test_completed": wafer,
        "wafer_segmented": {
            **_envelope(), **common, "source_event_id": wafer["event_id"],
            "product": wafer["product"], "tester": wafer["tester"],
            "test_end_time": wafer["end_time"], "geometry": wafer["geometry"],
            "die_map": wafer["die_map"], "model_version": "unet-test-1", "label": "Scratch",
            "pattern_probs": {"Scratch": 0.9, "none": 0.1}, "patterns": ["Scratch"],
            "clusters": [cluster], "mask_uri": "file:///tmp/mask.png", "mean_entropy": 0.2,
            "margin": 0.8, "bald": None, "embedding": [0.5, -0.25], "inference_ms": 3.5,
            "lane": "LIVE",
        },
        "wafer_assessed": {
            **_envelope(), **common, "source_event_id": wafer["event_id"],
            "product": wafer["product"], "tester": wafer["tester"], "model_version": "m1",
            "dominant_pattern": "Scratch", "patterns": ["Scratch"], "total_dies": 600,
            "failing_dies": 40, "affected_dies": 12, "yield_pct": 93.3, "coverage_pct": 2.0,
            "defect_density_per_cm2": 0.4, "edge_ratio": 0.1, "quadrant_fail_counts": [10, 10, 10, 10],
            "cluster_count": 1, "severity_score": 85.0, "severity_level": "CRITICAL",
            "test_end_time": wafer["end_time"], "lane": "LIVE",
        },
        "lot_excursion": {
            **_envelope(), "lot_id": wafer["lot_id"], "product": wafer["product"],
            "cause": "REPEATED_PATTERN", "pattern": "Scratch", "wafer_ids": ["W1", "W2", "W3"],
            "lot_yield_pct": None, "baseline_yield_pct": None, "z_score": None,
            "detail": "3 wafers show Scratch",
        },
        "alert_notification": {
            **_envelope(), "source_event_id": wafer["event_id"], **common, "rule": "critical",
            "channel": "webhook", "recipient": "fa-team", "status": "DELIVERED", "reason": None,
            "severity_score": 85.0,
        },
        "annotation_requested": {
            **_envelope(), **common, "source_event_id": wafer["event_id"], "model_version": "m1",
            "score": 0.7, "strategy": "bald", "batch_id": "b1",
        },
        "annotation_batch_completed": {
            **_envelope(), "batch_id": "b1", "annotation_count": 50,
            "dataset_uri": "s3://ws/annotations/b1.npz", "annotators": ["ana", "ben"],
        },
        "model_lifecycle": {
            **_envelope(), "model_name": "wafer-unet", "model_version": "m2", "action": "PROMOTED",
            "artifact_uri": "s3://ws/models/m2.onnx", "sha256": "ab" * 32,
            "metrics": {"macro_f1": 0.9}, "previous_version": "m1",
        },
    }
