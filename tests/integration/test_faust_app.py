"""The faust app factory: same settings and codec, reads what our producers write (zstd)."""

from __future__ import annotations

import asyncio

from infra.faust_app import create_faust_app
from infra.kafka.admin import ensure_topics
from infra.kafka.producer import EventProducer
from infra.metrics import MESSAGES_CONSUMED
from infra.settings import Settings
from schemas.topics import LOT_EXCURSIONS
from tests.factories import sample_records


def test_faust_agent_consumes_codec_framed_events(settings: Settings) -> None:
    ensure_topics(settings, (LOT_EXCURSIONS,))
    producer = EventProducer(settings)
    record = sample_records()["lot_excursion"]
    for n in range(3):
        producer.send(LOT_EXCURSIONS, f"LOT{n}", {**record, "event_id": f"e{n}"})
    producer.flush()

    app = create_faust_app(settings, "faust-check", topic_partitions=LOT_EXCURSIONS.partitions)
    assert app.conf.id == f"{settings.topic_prefix}faust-check"
    assert app.conf.producer_max_batch_size == 1  # dev-broker changelog workaround
    topic = app.topic(settings.topic(LOT_EXCURSIONS.name), key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")
    seen: list[str] = []

    @app.agent(topic)
    async def collect(stream):  # type: ignore[no-untyped-def]
        async for value in stream:
            seen.append(producer.codec.decode(value, "lot_excursion")["event_id"])

    async def run() -> None:
        await app.start()
        try:
            for _ in range(300):
                if len(seen) >= 3:
                    break
                await asyncio.sleep(0.1)
        finally:
            await app.stop()

    before = MESSAGES_CONSUMED.labels("faust-check", settings.topic(LOT_EXCURSIONS.name))._value.get()
    asyncio.run(run())
    assert sorted(seen) == ["e0", "e1", "e2"]
    after = MESSAGES_CONSUMED.labels("faust-check", settings.topic(LOT_EXCURSIONS.name))._value.get()
    assert after - before >= 3  # the Prometheus sensor counted them
