"""Topic administration on the real broker: create the catalog, drop a throw-away prefix."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient

from infra.kafka.admin import delete_topics, ensure_topics
from infra.settings import Settings
from schemas.topics import ALL_TOPICS


def _topics(settings: Settings) -> set[str]:
    return set(AdminClient(settings.kafka.client_config()).list_topics(timeout=10).topics)


def test_delete_topics_drops_exactly_the_prefixed_catalog(settings: Settings) -> None:
    other = settings.model_copy(update={"topic_prefix": "keep" + settings.topic_prefix})
    ensure_topics(settings)
    ensure_topics(other)
    ours = {settings.topic(spec.name) for spec in ALL_TOPICS}
    theirs = {other.topic(spec.name) for spec in ALL_TOPICS}
    assert ours | theirs <= _topics(settings)

    assert sorted(delete_topics(settings)) == sorted(ours)
    remaining = _topics(settings)
    assert not ours & remaining
    assert theirs <= remaining  # another prefix's topics are untouched
    assert delete_topics(settings) == []  # nothing left to drop: not an error
    delete_topics(other)
