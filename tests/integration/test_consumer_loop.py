"""The consumer loop's two-batch overlap, on the real broker.

Batch *k+1* is decoded and prepared while batch *k* is still being
processed; ``process`` calls stay sequential and in poll order, offsets
are committed only over processed records, and storing them never stalls
the event loop behind the next poll.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, Message, TopicPartition

from infra.kafka.admin import ensure_topics
from infra.kafka.consumer import ConsumerLoop, ConsumerService, Decoded
from infra.kafka.producer import EventProducer
from infra.settings import Settings
from schemas.topics import WAFER_TEST_COMPLETED

RECORDS = 12
BATCH = 4


def _publish(settings: Settings, topic: str) -> None:
    producer = EventProducer(settings)
    for n in range(RECORDS):
        producer.send_raw(topic, b"one-partition", str(n).encode())
    producer.flush()


def _run_until(loop: ConsumerLoop[int], done: Callable[[], bool]) -> None:
    async def main() -> None:
        task = asyncio.create_task(loop.run())
        for _ in range(600):
            if done() or task.done():
                break
            await asyncio.sleep(0.05)
        loop.stop()
        await task

    asyncio.run(main())


def _committed(settings: Settings, group: str, topic: str) -> int:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return sum(tp.offset for tp in committed if tp.offset >= 0)
    finally:
        consumer.close()


def _settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(
        update={"batch_max_messages": BATCH, "batch_max_wait_ms": 200})})


def test_next_batch_is_prepared_while_the_previous_one_is_processed(settings: Settings) -> None:
    settings = _settings(settings)
    ensure_topics(settings)
    topic = settings.topic(WAFER_TEST_COMPLETED.name)
    _publish(settings, topic)
    prepared_batches: list[list[int]] = []
    second_prepared = threading.Event()
    processed: list[list[int]] = []
    overlapped: list[bool] = []
    in_process = threading.Lock()

    def prepare(batch: list[Decoded[int]]) -> list[Decoded[int]]:
        prepared_batches.append([d.value for d in batch])
        if len(prepared_batches) == 2:
            second_prepared.set()
        return [Decoded(d.msg, d.value * 100) for d in batch]

    async def process(batch: list[Decoded[int]]) -> None:
        assert in_process.acquire(blocking=False), "process calls must never overlap"
        try:
            if not processed:  # hold the first batch until the second one is prepared
                overlapped.append(await asyncio.to_thread(second_prepared.wait, 10))
            processed.append([d.value for d in batch])
        finally:
            in_process.release()

    group = f"{settings.topic_prefix}loop-overlap"
    service = ConsumerService(name="loop-test", group_id=group, topics=[topic],
                              decode=_decode, prepare=prepare, process=process)
    loop = ConsumerLoop(settings, service, EventProducer(settings))
    _run_until(loop, lambda: sum(map(len, processed)) == RECORDS)

    assert overlapped == [True], "batch 2 was not prepared while batch 1 was in process"
    assert [v for batch in processed for v in batch] == [n * 100 for n in range(RECORDS)]
    assert [v for batch in prepared_batches for v in batch] == list(range(RECORDS))
    assert loop.processed == RECORDS
    assert _committed(settings, group, topic) == RECORDS


def test_a_failing_prepare_hands_process_the_batch_as_decoded(settings: Settings) -> None:
    settings = _settings(settings)
    ensure_topics(settings)
    topic = settings.topic(WAFER_TEST_COMPLETED.name)
    _publish(settings, topic)
    processed: list[int] = []

    def prepare(batch: list[Decoded[int]]) -> list[Decoded[int]]:
        if any(d.value == 5 for d in batch):
            raise RuntimeError("model crashed on this batch")
        return [Decoded(d.msg, d.value * 100) for d in batch]

    async def process(batch: list[Decoded[int]]) -> None:
        processed.extend(d.value for d in batch)

    group = f"{settings.topic_prefix}loop-fallback"
    service = ConsumerService(name="loop-test", group_id=group, topics=[topic],
                              decode=_decode, prepare=prepare, process=process)
    loop = ConsumerLoop(settings, service, EventProducer(settings))
    _run_until(loop, lambda: len(processed) == RECORDS)

    assert len(processed) == RECORDS
    unprepared = [v for v in processed if v < 100 and v != 0]
    assert 5 in unprepared, "the batch whose prepare failed reaches process as decoded"
    assert {v if v < 100 else v // 100 for v in processed} == set(range(RECORDS))
    assert loop.dead_lettered == 0
    assert _committed(settings, group, topic) == RECORDS


def test_storing_offsets_does_not_stall_the_event_loop_behind_an_idle_poll(settings: Settings) -> None:
    """Records arrive one at a time, so each batch completes while the next poll waits.

    confluent-kafka serialises calls on one consumer: an offset store issued
    from the event loop during that wait would hold the loop until the poll
    gives up (0.5 s when idle). The loop must keep ticking meanwhile.
    """
    ensure_topics(settings)
    topic = settings.topic(WAFER_TEST_COMPLETED.name)
    trickled = 4
    processed: list[int] = []
    gaps: list[float] = []

    async def process(batch: list[Decoded[int]]) -> None:
        processed.extend(d.value for d in batch)

    def trickle() -> None:
        producer = EventProducer(settings)
        for n in range(trickled):
            time.sleep(0.7)
            producer.send_raw(topic, b"one-partition", str(n).encode())
            producer.flush()

    group = f"{settings.topic_prefix}loop-store"
    service = ConsumerService(name="loop-test", group_id=group, topics=[topic],
                              decode=_decode, process=process)
    loop = ConsumerLoop(settings, service, EventProducer(settings))

    async def main() -> None:
        task = asyncio.create_task(loop.run())
        publisher = asyncio.create_task(asyncio.to_thread(trickle))
        last = time.monotonic()
        deadline = last + 60
        while time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            if processed:  # the group has joined and records flow
                gaps.append(now - last)
            last = now
            if len(processed) == trickled and publisher.done():
                await asyncio.sleep(1.0)  # idle polls after the last batch
                break
        loop.stop()
        await task
        await publisher

    asyncio.run(main())

    assert processed == list(range(trickled))
    assert max(gaps) < 0.3, f"the event loop stalled for {max(gaps):.3f} s"
    assert _committed(settings, group, topic) == trickled


def _decode(msg: Message) -> int:
    return int(msg.value())
