"""Build wafer-complete events from a die map and what the ATE host knows.

The event id is derived from the content (lot, wafer, tester, test end time,
die map), so publishing the same file twice yields the same id and every
downstream sink recognises the duplicate.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from schemas.diemap import FAIL, NO_DIE, encode_die_map
from schemas.ids import validate_id

_NAMESPACE = uuid.UUID("5b1f3c9e-8a0e-4d1b-9a57-3f0e2c6d7a10")


@dataclass(frozen=True)
class WaferContext:
    """Everything about a tested wafer except the die map."""

    lot_id: str
    wafer_id: str
    product: str
    tester: str
    test_program: str
    start_time: datetime
    end_time: datetime
    sublot_id: str | None = None
    test_program_rev: str | None = None
    facility: str | None = None
    test_head: int | None = None
    diameter_mm: float | None = 300.0
    die_width_mm: float | None = None
    die_height_mm: float | None = None
    notch: str = "DOWN"
    origin_x: int = 0
    origin_y: int = 0
    bins: tuple[tuple[int, str, bool], ...] = ((1, "PASS", True), (2, "FAIL", False))
    source_uri: str | None = None
    source_format: str = "simulator"
    extra: dict[str, Any] = field(default_factory=dict)


def content_event_id(ctx: WaferContext, dies: np.ndarray) -> str:
    """A UUID derived from what identifies one wafer test result."""
    digest = hashlib.sha256()
    for part in (ctx.lot_id, ctx.wafer_id, ctx.tester, ctx.end_time.isoformat()):
        digest.update(part.encode())
        digest.update(b"\x00")
    digest.update(np.ascontiguousarray(dies, dtype=np.uint8).tobytes())
    return str(uuid.uuid5(_NAMESPACE, digest.hexdigest()))


def wafer_completed_event(
    ctx: WaferContext,
    dies: np.ndarray,
    hard_bins: np.ndarray | None = None,
    lane: str = "LIVE",
    requested_model: str | None = None,
) -> dict[str, Any]:
    """The ``WaferTestCompleted`` record for one wafer (validated ids, encoded map)."""
    validate_id(ctx.lot_id, "lot id")
    validate_id(ctx.wafer_id, "wafer id")
    event_id = content_event_id(ctx, dies)
    geometry = {
        "diameter_mm": ctx.diameter_mm,
        "die_width_mm": ctx.die_width_mm,
        "die_height_mm": ctx.die_height_mm,
        "notch": ctx.notch,
        "origin_x": ctx.origin_x,
        "origin_y": ctx.origin_y,
        "center_x": None,
        "center_y": None,
    }
    return {
        "event_id": event_id,
        "schema_version": 1,
        "occurred_at": _utc(ctx.end_time),
        "correlation_id": event_id,
        "lot_id": ctx.lot_id,
        "sublot_id": ctx.sublot_id,
        "wafer_id": ctx.wafer_id,
        "product": ctx.product,
        "tester": ctx.tester,
        "test_program": ctx.test_program,
        "test_program_rev": ctx.test_program_rev,
        "facility": ctx.facility,
        "test_head": ctx.test_head,
        "start_time": _utc(ctx.start_time),
        "end_time": _utc(ctx.end_time),
        "geometry": geometry,
        "bins": [{"number": n, "name": name, "passed": ok} for n, name, ok in ctx.bins],
        "die_map": encode_die_map(dies, hard_bins),
        "source_uri": ctx.source_uri,
        "source_format": ctx.source_format,
        "lane": lane,
        "requested_model": requested_model,
    }


def die_counts(dies: np.ndarray) -> tuple[int, int]:
    """(dies on the wafer, failing dies)."""
    return int((dies != NO_DIE).sum()), int((dies == FAIL).sum())


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
