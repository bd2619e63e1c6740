"""PostgreSQL writes of the severity processor; every one is an idempotent upsert.

Natural keys make replays harmless: assessments on (source_event_id,
model_version), lot_state on lot_id, lot_excursions on (lot_id, cause,
pattern). Excursions are *claimed* by inserting the row and *confirmed* by
stamping ``published_at`` after the broker acknowledged the event (migration
0003), so an excursion is published at least once and, once confirmed, never
again.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from consumers.severity.lot import LotState, mean_yield_pct, pattern_wafers


async def upsert_assessments(pool: asyncpg.Pool, records: list[dict[str, Any]]) -> None:
    await pool.executemany(
        """INSERT INTO assessments (
               source_event_id, model_version, assessment_event_id, lot_id, wafer_id, product,
               dominant_pattern, patterns, total_dies, failing_dies, affected_dies, yield_pct,
               coverage_pct, defect_density_per_cm2, edge_ratio, quadrant_fail_counts,
               cluster_count, severity_score, severity_level, lane)
           VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20)
           ON CONFLICT (source_event_id, model_version) DO UPDATE SET
               dominant_pattern = EXCLUDED.dominant_pattern, patterns = EXCLUDED.patterns,
               total_dies = EXCLUDED.total_dies, failing_dies = EXCLUDED.failing_dies,
               affected_dies = EXCLUDED.affected_dies, yield_pct = EXCLUDED.yield_pct,
               coverage_pct = EXCLUDED.coverage_pct,
               defect_density_per_cm2 = EXCLUDED.defect_density_per_cm2,
               edge_ratio = EXCLUDED.edge_ratio,
               quadrant_fail_counts = EXCLUDED.quadrant_fail_counts,
               cluster_count = EXCLUDED.cluster_count, severity_score = EXCLUDED.severity_score,
               severity_level = EXCLUDED.severity_level, assessed_at = now()""",
        [
            (
                r["source_event_id"], r["model_version"], r["event_id"], r["lot_id"],
                r["wafer_id"], r["product"], r["dominant_pattern"], r["patterns"],
                r["total_dies"], r["failing_dies"], r["affected_dies"], r["yield_pct"],
                r["coverage_pct"], r["defect_density_per_cm2"], r["edge_ratio"],
                r["quadrant_fail_counts"], r["cluster_count"], r["severity_score"],
                r["severity_level"], r["lane"],
            )
            for r in records
        ],
    )


async def load_lot_states(pool: asyncpg.Pool, lot_ids: set[str]) -> dict[str, LotState]:
    """The state documents of ``lot_ids`` as last committed (new lots are absent)."""
    rows = await pool.fetch(
        "SELECT lot_id, state FROM lot_state WHERE lot_id = ANY($1::text[])", list(lot_ids)
    )
    states = {r["lot_id"]: json.loads(r["state"]) for r in rows}
    return {lot_id: state for lot_id, state in states.items() if state}


async def upsert_lot_states(pool: asyncpg.Pool, states: dict[str, LotState]) -> None:
    """Store each lot's state document and its queryable summary columns."""
    await pool.executemany(
        """INSERT INTO lot_state (lot_id, product, wafer_count, mean_yield_pct, pattern_counts,
                                  excursions, state)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7::jsonb)
           ON CONFLICT (lot_id) DO UPDATE SET
               wafer_count = EXCLUDED.wafer_count, mean_yield_pct = EXCLUDED.mean_yield_pct,
               pattern_counts = EXCLUDED.pattern_counts, excursions = EXCLUDED.excursions,
               state = EXCLUDED.state, updated_at = now()""",
        [
            (
                lot_id, state["product"], len(state["wafers"]), mean_yield_pct(state),
                json.dumps({p: len(ids) for p, ids in pattern_wafers(state).items()}),
                json.dumps(state["emitted"]), json.dumps(state),
            )
            for lot_id, state in states.items()
        ],
    )


async def recent_lot_yields(
    pool: asyncpg.Pool, product: str, exclude_lot: str, min_wafers: int, window: int
) -> list[float]:
    """Mean yields of the product's most recently updated other lots (the rolling baseline)."""
    rows = await pool.fetch(
        """SELECT mean_yield_pct FROM lot_state
           WHERE product = $1 AND lot_id <> $2 AND wafer_count >= $3
           ORDER BY updated_at DESC LIMIT $4""",
        product, exclude_lot, min_wafers, window,
    )
    return [float(r["mean_yield_pct"]) for r in rows]


async def claim_excursion(pool: asyncpg.Pool, record: dict[str, Any]) -> bool:
    """Insert the excursion row; True unless it exists and its event was already published."""
    published = await pool.fetchval(
        """WITH inserted AS (
               INSERT INTO lot_excursions (event_id, lot_id, cause, pattern, detail)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (lot_id, cause, pattern) DO NOTHING
               RETURNING published_at)
           SELECT published_at IS NOT NULL FROM inserted
           UNION ALL
           SELECT published_at IS NOT NULL FROM lot_excursions
           WHERE lot_id = $2 AND cause = $3 AND pattern = $4
           LIMIT 1""",
        record["event_id"], record["lot_id"], record["cause"], record["pattern"] or "",
        record["detail"],
    )
    return not published


async def confirm_excursion(pool: asyncpg.Pool, record: dict[str, Any]) -> None:
    await pool.execute(
        """UPDATE lot_excursions SET published_at = now()
           WHERE lot_id = $1 AND cause = $2 AND pattern = $3 AND published_at IS NULL""",
        record["lot_id"], record["cause"], record["pattern"] or "",
    )
