"""The records the severity processor publishes, with deterministic event ids.

Ids are uuid5 of what makes the fact unique (source event + model version for
an assessment; lot + cause + pattern for an excursion), so a replay or a
restart re-publishes identical ids that downstream consumers can ignore.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from consumers.severity.lot import Excursion
from consumers.severity.metrics import WaferMetrics
from consumers.severity.scoring import Severity

_ASSESSED_NAMESPACE = uuid.UUID("5b0e2f7a-91c4-4d3e-8a61-2c7f0d9e4b15")
_EXCURSION_NAMESPACE = uuid.UUID("a3c19e84-6f2b-4b7d-9e05-7d41c8b2f6a9")


def assessment_event_id(source_event_id: str, model_version: str) -> str:
    return str(uuid.uuid5(_ASSESSED_NAMESPACE, f"{source_event_id}/{model_version}"))


def excursion_event_id(lot_id: str, cause: str, pattern: str | None) -> str:
    return str(uuid.uuid5(_EXCURSION_NAMESPACE, f"{lot_id}/{cause}/{pattern or ''}"))


#: How many clusters an assessed event carries for the alert message.
TOP_CLUSTERS = 5


def wafer_assessed(
    segmented: dict[str, Any], metrics: WaferMetrics, severity: Severity
) -> dict[str, Any]:
    """The ``WaferAssessed`` record for one wafer-segmented event."""
    values = asdict(metrics)
    values["quadrant_fail_counts"] = list(metrics.quadrant_fail_counts)
    return {
        "event_id": assessment_event_id(segmented["source_event_id"], segmented["model_version"]),
        "schema_version": 1,
        "occurred_at": datetime.now(UTC),
        "correlation_id": segmented["correlation_id"],
        "source_event_id": segmented["source_event_id"],
        "lot_id": segmented["lot_id"],
        "wafer_id": segmented["wafer_id"],
        "product": segmented["product"],
        "tester": segmented["tester"],
        "model_version": segmented["model_version"],
        "patterns": list(segmented["patterns"]),
        **values,
        "severity_score": severity.score,
        "severity_level": severity.level,
        "top_clusters": segmented["clusters"][:TOP_CLUSTERS],  # largest first
        "mask_uri": segmented["mask_uri"],
        "die_map": segmented["die_map"],  # so the notifier can draw the wafer
        "test_end_time": segmented["test_end_time"],
        "lane": segmented["lane"],
    }


def lot_excursion(
    lot_id: str, product: str, correlation_id: str, excursion: Excursion
) -> dict[str, Any]:
    """The ``LotExcursion`` record; ``correlation_id`` is the wafer that tipped the lot over."""
    return {
        "event_id": excursion_event_id(lot_id, excursion.cause, excursion.pattern),
        "schema_version": 1,
        "occurred_at": datetime.now(UTC),
        "correlation_id": correlation_id,
        "lot_id": lot_id,
        "product": product,
        "cause": excursion.cause,
        "pattern": excursion.pattern,
        "wafer_ids": list(excursion.wafer_ids),
        "lot_yield_pct": excursion.lot_yield_pct,
        "baseline_yield_pct": excursion.baseline_yield_pct,
        "z_score": excursion.z_score,
        "detail": excursion.detail,
    }
