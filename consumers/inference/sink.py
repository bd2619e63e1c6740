"""PostgreSQL writes of the inference worker, idempotent by natural key.

A wafer, its inference result and its clusters are written in one
transaction; each insert is ``ON CONFLICT DO NOTHING`` on the natural key
(wafer event id; event id + model version), so a batch replayed after a crash
or a rebalance leaves exactly one copy of everything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg
import numpy as np

from producers.events import die_counts

#: One wafer's result: its wafer-complete event, the die grid the worker
#: already decoded from that event, and its wafer-segmented event.
WaferResult = tuple[dict[str, Any], np.ndarray, dict[str, Any]]


async def write_results(pool: asyncpg.Pool, results: Sequence[WaferResult]) -> None:
    """Persist each wafer, its inference result and its clusters atomically."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(_INSERT_WAFER, [_wafer_row(w, dies) for w, dies, _ in results])
        await conn.executemany(_INSERT_RESULT, [_result_row(s) for _, _, s in results])
        cluster_rows = [row for _, _, s in results for row in _cluster_rows(s)]
        if cluster_rows:
            await conn.executemany(_INSERT_CLUSTER, cluster_rows)


_INSERT_WAFER = """
INSERT INTO wafers (event_id, lot_id, sublot_id, wafer_id, product, tester, test_program,
    test_program_rev, facility, test_head, start_time, end_time, grid_rows, grid_cols,
    total_dies, failing_dies, diameter_mm, die_width_mm, die_height_mm, source_uri,
    source_format, lane)
VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22)
ON CONFLICT (event_id) DO NOTHING"""

_INSERT_RESULT = """
INSERT INTO inference_results (source_event_id, model_version, result_event_id, label,
    pattern_probs, patterns, mask_uri, mean_entropy, margin, bald, embedding, inference_ms, lane)
VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)
ON CONFLICT (source_event_id, model_version) DO NOTHING"""

_INSERT_CLUSTER = """
INSERT INTO clusters (source_event_id, model_version, cluster_index, pattern, die_count,
    area_fraction, centroid_row, centroid_col, centroid_x_mm, centroid_y_mm, bbox,
    compactness, polygon)
VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)
ON CONFLICT (source_event_id, model_version, cluster_index) DO NOTHING"""


def _wafer_row(w: dict[str, Any], dies: np.ndarray) -> tuple[Any, ...]:
    total, failing = die_counts(dies)
    g = w["geometry"]
    return (
        w["event_id"], w["lot_id"], w["sublot_id"], w["wafer_id"], w["product"], w["tester"],
        w["test_program"], w["test_program_rev"], w["facility"], w["test_head"],
        w["start_time"], w["end_time"], dies.shape[0], dies.shape[1], total, failing,
        g["diameter_mm"], g["die_width_mm"], g["die_height_mm"], w["source_uri"],
        w["source_format"], w["lane"],
    )


def _result_row(s: dict[str, Any]) -> tuple[Any, ...]:
    return (
        s["source_event_id"], s["model_version"], s["event_id"], s["label"],
        json.dumps(s["pattern_probs"]), s["patterns"], s["mask_uri"], s["mean_entropy"],
        s["margin"], s["bald"], s["embedding"], s["inference_ms"], s["lane"],
    )


def _cluster_rows(s: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (
            s["source_event_id"], s["model_version"], i, c["pattern"], c["die_count"],
            c["area_fraction"], c["centroid_row"], c["centroid_col"], c["centroid_x_mm"],
            c["centroid_y_mm"], c["bbox"], c["compactness"], json.dumps(c["polygon"]),
        )
        for i, c in enumerate(s["clusters"])
    ]
