"""Copy an exact offset or time range of a topic onto its replay lane.

Targets: ``wafer.test.completed`` replays onto the backfill lane topic
``wafer.test.completed.backfill`` (its consumers run in their own group, so
live traffic keeps priority); any other topic ``T`` replays onto ``T.replay``,
created with ``T``'s partition count if missing (never left to broker
auto-creation). Key, value and headers are copied byte for byte, plus
``x-replayed-from-{topic,partition,offset,timestamp}`` headers.

Bounds are half-open: ``--from`` inclusive, ``--to`` exclusive, each an offset
or an ISO-8601 time (naive = UTC) compared with record timestamps.

Why the time lookup is verified: ``offsets_for_times`` must return the first
offset whose timestamp is >= t. The development broker (tansu) answers 0 for
everything, which would silently replay a whole partition. So the answer is
checked against the timestamps of the record at that offset and of the one
before it; if the check fails, the offset is found by binary search over
offsets, reading one record's timestamp per probe. (Like Kafka's own lookup,
the search assumes timestamps do not decrease within a partition.)

Why the end is not taken from the high watermark: tansu reports one that can
be too low, so a range is read until its upper bound is passed or no record
arrives for ``idle_s``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from infra.kafka.producer import EventProducer
from infra.settings import Settings
from schemas.topics import WAFER_TEST_COMPLETED, WAFER_TEST_COMPLETED_BACKFILL

log = structlog.get_logger(__name__)

REPLAY_SUFFIX = ".replay"


def parse_utc(text: str) -> datetime:
    """An ISO-8601 time; naive means UTC (fab systems log in UTC)."""
    moment = datetime.fromisoformat(text.strip())
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Bound:
    """One end of a range: an offset or a UTC time, exactly one set."""

    offset: int | None = None
    time: datetime | None = None

    @classmethod
    def parse(cls, text: str) -> Bound:
        """``"1234"`` is an offset; anything else must be an ISO-8601 time."""
        if text.strip().isdigit():
            return cls(offset=int(text))
        return cls(time=parse_utc(text))

    @property
    def time_ms(self) -> int:
        assert self.time is not None
        return int(self.time.timestamp() * 1000)


def replay_target(topic: str) -> str:
    """The (unprefixed) topic a replay of ``topic`` goes to."""
    if topic == WAFER_TEST_COMPLETED.name:
        return WAFER_TEST_COMPLETED_BACKFILL.name
    return topic + REPLAY_SUFFIX


@dataclass
class PartitionReport:
    partition: int
    start: int
    start_method: str  # "offset", "broker-lookup" or "search"
    copied: int = 0
    first_offset: int | None = None
    last_offset: int | None = None


@dataclass
class ReplayReport:
    source: str
    target: str
    partitions: list[PartitionReport] = field(default_factory=list)

    @property
    def copied(self) -> int:
        return sum(p.copied for p in self.partitions)


class _Reader:
    """Positioned reads of one topic: one record's timestamp (a probe) or a run of records."""

    def __init__(self, settings: Settings, topic: str, probe_timeout_s: float) -> None:
        self.topic = topic
        self.probe_timeout_s = probe_timeout_s
        self.consumer = Consumer({
            **settings.kafka.client_config(),
            "group.id": f"waferstream-replay-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "latest",
            # End-of-partition events make a probe past the end answer at once
            # instead of after probe_timeout_s.
            "enable.partition.eof": True,
            # A fetch parked at the end of a partition delays the next seek by up
            # to this long; probes seek often.
            "fetch.wait.max.ms": 50,
        })

    def partitions(self) -> list[int]:
        metadata = self.consumer.list_topics(self.topic, timeout=10)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise KafkaException(f"topic {self.topic} not found: {topic.error if topic else ''}")
        return sorted(topic.partitions)

    def seek(self, partition: int, offset: int) -> None:
        self.consumer.assign([TopicPartition(self.topic, partition, offset)])

    def next(self, timeout_s: float, *, stop_at_eof: bool) -> Message | None:
        """The next record, or None after ``timeout_s`` without one (or at EOF if asked)."""
        while (msg := self.consumer.poll(timeout_s)) is not None:
            error = msg.error()
            if error is None:
                return msg
            if error.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(error)
            if stop_at_eof:
                return None
        return None

    def offset_for_time(self, partition: int, time_ms: int) -> int:
        """The broker's answer to "first offset with timestamp >= time_ms" (-1: none); unverified."""
        [answer] = self.consumer.offsets_for_times(
            [TopicPartition(self.topic, partition, time_ms)], timeout=10
        )
        return int(answer.offset)

    def record_at(self, partition: int, offset: int) -> Message | None:
        """The first record at or after ``offset`` (None: nothing there yet)."""
        self.seek(partition, offset)
        return self.next(self.probe_timeout_s, stop_at_eof=True)

    def close(self) -> None:
        self.consumer.close()


def _first_at_or_after(reader: _Reader, partition: int, time_ms: int) -> tuple[int, str]:
    """First offset whose record timestamp is >= ``time_ms``: the broker's answer if verified."""
    low, high = reader.consumer.get_watermark_offsets(TopicPartition(reader.topic, partition), timeout=10)

    def at_or_after(offset: int) -> bool:  # monotone in offset
        msg = reader.record_at(partition, offset)
        return msg is None or msg.timestamp()[1] >= time_ms

    looked_up = reader.offset_for_time(partition, time_ms)
    if looked_up >= low and at_or_after(looked_up) and (looked_up == low or not at_or_after(looked_up - 1)):
        return looked_up, "broker-lookup"
    log.warning("offsets_for_times answer failed verification; searching", topic=reader.topic,
                partition=partition, answer=looked_up)
    # The high watermark is only a hint (too low on tansu): grow until past the range.
    hi = max(high, low + 1)
    while not at_or_after(hi):
        hi = low + 2 * (hi - low)
    lo = low
    while lo < hi:
        mid = (lo + hi) // 2
        if at_or_after(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo, "search"


def _ensure_target(settings: Settings, source: str, target: str, partitions: int) -> None:
    admin = AdminClient(settings.kafka.client_config())
    if target in admin.list_topics(timeout=10).topics:
        return
    futures = admin.create_topics([NewTopic(target, num_partitions=partitions, replication_factor=-1)])
    try:
        futures[target].result()
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise
    log.info("replay topic created", topic=target, source=source, partitions=partitions)


def replay(
    settings: Settings,
    topic: str,
    start: Bound,
    end: Bound,
    partitions: Sequence[int] | None = None,
    *,
    idle_s: float = 2.0,
    probe_timeout_s: float = 1.0,
    on_copied: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Copy ``[start, end)`` of catalog topic ``topic`` (unprefixed) to its replay target.

    Raises:
        DeliveryFailed: the broker did not acknowledge the copies (nothing is
            marked; re-running copies the range again, same event ids).
    """
    source, target = settings.topic(topic), settings.topic(replay_target(topic))
    report = ReplayReport(source, target)
    reader = _Reader(settings, source, probe_timeout_s)
    producer = EventProducer(settings)
    try:
        all_partitions = reader.partitions()
        if topic != WAFER_TEST_COMPLETED.name:
            _ensure_target(settings, source, target, len(all_partitions))
        for partition in partitions if partitions is not None else all_partitions:
            if partition not in all_partitions:
                raise ValueError(f"{source} has no partition {partition}")
            report.partitions.append(
                _copy_partition(reader, producer, target, partition, start, end, idle_s, on_copied)
            )
        producer.flush()
    finally:
        reader.close()
    log.info("replay done", source=source, target=target, copied=report.copied)
    return report


def _copy_partition(
    reader: _Reader,
    producer: EventProducer,
    target: str,
    partition: int,
    start: Bound,
    end: Bound,
    idle_s: float,
    on_copied: Callable[[int], None] | None,
) -> PartitionReport:
    if start.offset is not None:
        low, _ = reader.consumer.get_watermark_offsets(TopicPartition(reader.topic, partition), timeout=10)
        offset, method = max(start.offset, low), "offset"
    else:
        offset, method = _first_at_or_after(reader, partition, start.time_ms)
    report = PartitionReport(partition, offset, method)
    reader.seek(partition, offset)
    # EOF is not trusted as the end here (a broker may report a stale high
    # watermark); the range ends at its bound or after idle_s without records.
    while (msg := reader.next(idle_s, stop_at_eof=False)) is not None:
        timestamp = msg.timestamp()[1]
        if start.time is not None and timestamp < start.time_ms:
            continue  # defensive: a record older than the range never leaks in
        if (end.offset is not None and msg.offset() >= end.offset) or (
            end.time is not None and timestamp >= end.time_ms
        ):
            break
        headers = dict(msg.headers() or [])
        headers.update({
            "x-replayed-from-topic": reader.topic,
            "x-replayed-from-partition": str(partition),
            "x-replayed-from-offset": str(msg.offset()),
            "x-replayed-from-timestamp": str(timestamp),
        })
        producer.send_raw(target, msg.key(), msg.value(), headers)
        report.copied += 1
        report.first_offset = msg.offset() if report.first_offset is None else report.first_offset
        report.last_offset = msg.offset()
        if on_copied:
            on_copied(1)
    log.info("partition replayed", topic=reader.topic, partition=partition, start=offset,
             method=method, copied=report.copied)
    return report
