"""Create and verify the catalog's topics (``waferstream topics ensure``)."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from infra.settings import Settings
from schemas.topics import ALL_TOPICS, TopicSpec

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TopicStatus:
    name: str
    action: str  # "created", "ok", "mismatch"
    detail: str = ""


def ensure_topics(
    settings: Settings, topics: tuple[TopicSpec, ...] = ALL_TOPICS, timeout_s: float = 15.0
) -> list[TopicStatus]:
    """Create missing topics; report existing ones whose partition count differs.

    Partition counts are never changed automatically: adding partitions to a
    lot-keyed topic would move lots between partitions and break ordering, so
    a mismatch is reported for an operator to decide.
    """
    admin = AdminClient(settings.kafka.client_config())
    existing = admin.list_topics(timeout=timeout_s).topics
    statuses: list[TopicStatus] = []
    to_create: list[NewTopic] = []
    for spec in topics:
        name = settings.topic(spec.name)
        if name in existing and not existing[name].error:
            count = len(existing[name].partitions)
            if count != spec.partitions:
                statuses.append(
                    TopicStatus(name, "mismatch", f"{count} partitions, catalog says {spec.partitions}")
                )
            else:
                statuses.append(TopicStatus(name, "ok"))
            continue
        to_create.append(
            NewTopic(name, num_partitions=spec.partitions, replication_factor=-1, config=spec.config())
        )
    if to_create:
        for name, future in admin.create_topics(to_create, request_timeout=timeout_s).items():
            try:
                future.result()
                statuses.append(TopicStatus(name, "created"))
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" in str(exc):
                    statuses.append(TopicStatus(name, "ok", "created concurrently"))
                else:
                    raise
    for status in statuses:
        log.info("topic", topic=status.name, action=status.action, detail=status.detail)
    return statuses


def delete_topics(
    settings: Settings, topics: tuple[TopicSpec, ...] = ALL_TOPICS, timeout_s: float = 15.0
) -> list[str]:
    """Delete the catalog's topics under ``settings.topic_prefix``; returns those deleted.

    For throw-away prefixes only (a benchmark run, a test): a broker keeps
    every record of every topic it holds, and the development broker's CPU
    per request grows with what it holds.
    """
    admin = AdminClient(settings.kafka.client_config())
    existing = admin.list_topics(timeout=timeout_s).topics
    names = [name for name in (settings.topic(spec.name) for spec in topics) if name in existing]
    if not names:
        return []
    for future in admin.delete_topics(names, operation_timeout=timeout_s).values():
        future.result()
    log.info("topics deleted", topics=len(names), prefix=settings.topic_prefix)
    return names
