"""Acceptance 1: every schema round-trips through the real broker in both wire formats."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer

from infra.kafka.admin import ensure_topics
from infra.kafka.producer import EventProducer
from infra.settings import Settings
from schemas.topics import EVENT_TOPICS
from tests.factories import sample_records


def _consume(settings: Settings, topics: list[str], expected: int) -> list:  # type: ignore[type-arg]
    consumer = Consumer({
        **settings.kafka.client_config(), "group.id": f"rt-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
    })
    consumer.subscribe(topics)
    got = []
    try:
        for _ in range(200):
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                got.append(msg)
            if len(got) >= expected:
                break
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize("registry", ["", "mock://roundtrip"], ids=["single-object", "confluent"])
def test_every_event_type_round_trips_through_the_broker(settings: Settings, registry: str) -> None:
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"schema_registry_url": registry})}
    )
    statuses = ensure_topics(settings)
    assert {s.action for s in statuses} == {"created"}
    assert {s.action for s in ensure_topics(settings)} == {"ok"}  # verify, not recreate

    producer = EventProducer(settings)
    samples = sample_records()
    spec_by_type = {t.event_type: t for t in EVENT_TOPICS if t.name != "wafer.test.completed.backfill"}
    for event_type, record in samples.items():
        producer.send(spec_by_type[event_type], "K1", record)
    producer.flush()

    topics = [settings.topic(spec_by_type[t].name) for t in samples]
    messages = _consume(settings, topics, len(samples))
    assert len(messages) == len(samples)
    type_by_topic = {settings.topic(s.name): t for t, s in spec_by_type.items()}
    for msg in messages:
        event_type = type_by_topic[msg.topic()]
        payload = msg.value()
        assert payload[0:1] == (b"\x00" if registry else b"\xc3")
        decoded = producer.codec.decode(payload, event_type)
        original = samples[event_type]
        for key, value in original.items():
            assert decoded[key] == value, (event_type, key)
        headers = dict(msg.headers())
        assert headers["event_id"].decode() == original["event_id"]
        assert msg.key() == b"K1"
