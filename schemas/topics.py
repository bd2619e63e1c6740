"""The topic catalog: every topic waferstream uses, in one place.

``waferstream topics ensure`` creates missing topics from this table and
verifies existing ones (partition count and cleanup policy). Topics are
always created explicitly: a broker that auto-creates unknown topics would
give them a default partition count (tansu: 4) and the wrong retention.

Keys: every wafer event is keyed by **lot id**, so all wafers of a lot land
on one partition in order; that is what lets the severity processor keep
lot state locally and lets alerts for one lot come out in test order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

DAY_MS: Final[int] = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, shape, retention and why it is keyed as it is."""

    name: str
    event_type: str | None  # schemas.catalog.EVENT_TYPES key; None for DLQs (raw bytes)
    partitions: int
    retention_ms: int
    cleanup_policy: Literal["delete", "compact", "compact,delete"]
    key: str
    why: str

    def config(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}


WAFER_TEST_COMPLETED: Final = TopicSpec(
    "wafer.test.completed", "wafer_test_completed", 6, 14 * DAY_MS, "delete", "lot_id",
    "Live trigger from ATE hosts; keyed by lot so a lot's wafers stay ordered on one partition.",
)
WAFER_TEST_COMPLETED_BACKFILL: Final = TopicSpec(
    "wafer.test.completed.backfill", "wafer_test_completed", 6, 7 * DAY_MS, "delete", "lot_id",
    "Replay/backfill lane: a separate topic and consumer group so live traffic keeps priority.",
)
WAFER_SEGMENTED: Final = TopicSpec(
    "wafer.segmented", "wafer_segmented", 6, 14 * DAY_MS, "delete", "lot_id",
    "Inference results; same key and partitioning as the trigger keeps lot order end to end.",
)
WAFER_ASSESSED: Final = TopicSpec(
    "wafer.assessed", "wafer_assessed", 6, 30 * DAY_MS, "delete", "lot_id",
    "Metrics and severity per wafer; consumed by the alert notifier and dashboards.",
)
LOT_EXCURSIONS: Final = TopicSpec(
    "lot.excursions", "lot_excursion", 3, 90 * DAY_MS, "delete", "lot_id",
    "Lot-level excursions (once per lot and cause); low volume, long retention for audits.",
)
ALERT_NOTIFICATIONS: Final = TopicSpec(
    "alert.notifications", "alert_notification", 3, 90 * DAY_MS, "delete", "lot_id",
    "Outcome of every alert delivery, for audit and integrations.",
)
ANNOTATION_REQUESTS: Final = TopicSpec(
    "annotation.requests", "annotation_requested", 3, 30 * DAY_MS, "delete", "lot_id",
    "Wafers the active-learning scorer wants labelled.",
)
ANNOTATION_BATCHES: Final = TopicSpec(
    "annotation.batches.completed", "annotation_batch_completed", 1, 365 * DAY_MS, "delete",
    "batch_id", "Completed annotation batches trigger retraining; one partition keeps them ordered.",
)
MODEL_LIFECYCLE: Final = TopicSpec(
    "model.lifecycle", "model_lifecycle", 1, 365 * DAY_MS, "compact,delete", "model_name",
    "Trained/promoted/rolled-back models; compacted per model name so a starting worker "
    "finds the latest promotion, one partition so every worker sees one order.",
)

EVENT_TOPICS: Final[tuple[TopicSpec, ...]] = (
    WAFER_TEST_COMPLETED,
    WAFER_TEST_COMPLETED_BACKFILL,
    WAFER_SEGMENTED,
    WAFER_ASSESSED,
    LOT_EXCURSIONS,
    ALERT_NOTIFICATIONS,
    ANNOTATION_REQUESTS,
    ANNOTATION_BATCHES,
    MODEL_LIFECYCLE,
)

DLQ_SUFFIX: Final[str] = ".dlq"


def dead_letter_topic(spec: TopicSpec) -> TopicSpec:
    """The DLQ of a consumed topic: raw bytes kept 30 days, same key for inspection."""
    return TopicSpec(
        spec.name + DLQ_SUFFIX, None, 1, 30 * DAY_MS, "delete", spec.key,
        f"Poison records from {spec.name} with the error in headers; replay after a fix.",
    )


ALL_TOPICS: Final[tuple[TopicSpec, ...]] = EVENT_TOPICS + tuple(
    dead_letter_topic(t) for t in EVENT_TOPICS
)


def by_name(name: str) -> TopicSpec:
    """Look a catalog topic up by its (unprefixed) name."""
    for spec in ALL_TOPICS:
        if spec.name == name:
            return spec
    raise KeyError(f"{name!r} is not in the topic catalog")
