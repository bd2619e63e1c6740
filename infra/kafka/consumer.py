"""The at-least-once micro-batch loop every confluent-kafka service runs.

``while running: poll a batch (N records or T ms) -> decode -> prepare ->
process -> flush produced records -> store offsets``; librdkafka commits the
stored offsets every ``commit_interval_s``, on partition revocation and on
close. An offset is stored only after its record was fully processed (its
results written and every produced record acknowledged), so a crash at any
point replays at most the uncommitted tail, and idempotent sinks make the
replay harmless.

Two batches overlap: while batch *k* is processed, flushed and committed (a
task, mostly waiting on the database and the broker), the loop already polls,
decodes and prepares batch *k+1* (the service's CPU-bound, side-effect-free
step, e.g. the model run, in a worker thread). ``process`` calls never
overlap and complete in poll order, so sinks see batches in order and stored
offsets only ever move forward over fully processed records. On a 2-core
machine this lets the model use one core while the write path uses the other,
instead of the two taking turns. Processed offsets are queued and stored by
the polling thread (see :meth:`ConsumerLoop._mark_done`): confluent-kafka
serialises calls on one consumer, so a store from the event loop would wait
for the poll in progress.

Failure policy, decided by an injectable classifier (:mod:`infra.errors`):

* poison (undecodable, schema violation, invalid value, unexpected bug in
  processing one record): the record goes to ``<topic>.dlq`` with headers
  naming the error, and the loop moves on;
* dependency outage (database, object store, broker): the assigned
  partitions are paused and the *same* batch is retried with capped
  exponential backoff until it succeeds; nothing is dead-lettered.

SIGTERM/SIGINT only set a flag (:meth:`ConsumerLoop.stop`): the current batch
is finished (or, if stuck in an outage, abandoned uncommitted), offsets are
committed, and the consumer closes and leaves the group.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from infra.errors import ErrorClassifier, default_classifier
from infra.kafka.dlq import send_to_dead_letter
from infra.kafka.producer import EventProducer
from infra.logging import bind_correlation
from infra.metrics import (
    BATCH_SIZE,
    CONSUMER_LAG,
    DEPENDENCY_OUTAGES,
    IN_FLIGHT,
    MESSAGES_CONSUMED,
    MESSAGES_DEAD_LETTERED,
    MESSAGES_FAILED,
    PAUSED,
    PROCESSING_SECONDS,
)
from infra.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")
_POISON = object()  # decode outcome: dead-lettered
_STOPPED = object()  # decode outcome: stop requested during an outage


@dataclass(frozen=True)
class Decoded(Generic[T]):
    """A decoded record together with the Kafka message it came from."""

    msg: Message
    value: T


@dataclass
class ConsumerService(Generic[T]):
    """What a service plugs into the loop.

    ``decode`` turns one message into a value or raises an EventError (poison).
    ``process`` handles a whole batch and must be idempotent; it may produce
    records with the loop's producer (they are flushed before offsets are
    stored). It raises a dependency error to request a retry of the batch.

    ``prepare`` (optional) is the batch's CPU-bound part without side
    effects. The loop runs it in a worker thread while the previous batch is
    still being processed, and hands its result to ``process``. It may be
    skipped: if it raises, ``process`` gets the batch as decoded, and
    ``process`` must handle such a batch (or one record of it, when poison is
    isolated) on its own, so that its error handling alone decides between
    poison and outage.
    """

    name: str
    group_id: str
    topics: Sequence[str]
    decode: Callable[[Message], T]
    process: Callable[[list[Decoded[T]]], Awaitable[None]]
    prepare: Callable[[list[Decoded[T]]], list[Decoded[T]]] | None = None
    classify: ErrorClassifier = default_classifier
    consumer_overrides: dict[str, Any] = field(default_factory=dict)


class ConsumerLoop(Generic[T]):
    """Runs a :class:`ConsumerService` until :meth:`stop` is called."""

    def __init__(
        self, settings: Settings, service: ConsumerService[T], producer: EventProducer
    ) -> None:
        self.settings = settings
        self.service = service
        self.producer = producer
        self._running = False
        self._stopping = asyncio.Event()
        kafka = settings.kafka
        self._consumer = Consumer(
            {
                **kafka.client_config(),
                "group.id": service.group_id,
                "enable.auto.commit": True,
                "auto.commit.interval.ms": int(kafka.commit_interval_s * 1000),
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": kafka.session_timeout_ms,
                "max.poll.interval.ms": kafka.max_poll_interval_ms,
                # The dev broker may hold a fetch for the full wait even when data
                # arrives, so this bounds the per-hop latency there (see settings).
                "fetch.wait.max.ms": kafka.fetch_wait_max_ms,
                "partition.assignment.strategy": "cooperative-sticky",
                **service.consumer_overrides,
            }
        )
        self._backoff = settings.retry
        self.processed = 0
        self.dead_lettered = 0
        self._in_flight = 0
        self._paused = False
        self._done_lock = threading.Lock()
        self._done_offsets: dict[tuple[str, int], int] = {}  # next offset per processed partition

    # -- lifecycle ----------------------------------------------------------

    def stop(self) -> None:
        """Request a graceful stop; safe to call from a signal handler."""
        self._running = False
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        """Make SIGTERM/SIGINT request a graceful stop (never exit mid-write)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self) -> None:
        """Consume until stopped, then commit what was processed and leave the group."""
        self._running = True
        self._consumer.subscribe(list(self.service.topics))
        log.info("consumer started", service=self.service.name, topics=list(self.service.topics))
        last_lag = 0.0
        completing: asyncio.Task[None] | None = None  # the previous batch's process..commit
        try:
            while self._running:
                batch = await asyncio.to_thread(self._poll_batch)
                if batch:
                    started = time.perf_counter()
                    decoded = await self._decode_batch(batch)
                    if decoded is None:
                        break  # stopped during an outage: the batch stays uncommitted
                    decoded = await self._prepare(decoded)
                    if completing is not None:
                        await completing
                    completing = asyncio.create_task(self._complete(batch, decoded, started))
                if time.monotonic() - last_lag > 5:
                    self._report_lag()
                    last_lag = time.monotonic()
        finally:
            try:
                if completing is not None:
                    await completing  # finish the batch in hand before leaving the group
            finally:
                await asyncio.to_thread(self._close)

    def _close(self) -> None:
        try:
            self.producer.flush(10)
        finally:
            self._store_done_offsets()
            self._consumer.close()  # commits stored offsets and leaves the group
        log.info(
            "consumer stopped",
            service=self.service.name,
            processed=self.processed,
            dead_lettered=self.dead_lettered,
        )

    # -- the batch ----------------------------------------------------------

    def _poll_batch(self) -> list[Message]:
        """Up to N records: block (briefly) for the first, then give the batch T ms to fill.

        librdkafka's ``consume(n, timeout)`` waits until it has *n* records or
        the timeout passes, so the first call asks for one record only: an
        idle loop still notices ``stop()`` within 0.5 s, and a lone record
        waits at most T ms for company instead of the whole poll timeout.
        """
        kafka = self.settings.kafka
        self._store_done_offsets()
        batch = self._usable(self._consumer.consume(1, 0.5))
        if not batch:
            return batch
        deadline = time.monotonic() + kafka.batch_max_wait_ms / 1000
        while len(batch) < kafka.batch_max_messages and self._running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            batch += self._usable(
                self._consumer.consume(kafka.batch_max_messages - len(batch), remaining)
            )
        return batch

    @staticmethod
    def _usable(msgs: list[Message]) -> list[Message]:
        """Records only; partition EOFs are dropped and other errors logged."""
        usable = []
        for msg in msgs:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error", error=msg.error().str())
                continue
            usable.append(msg)
        return usable

    async def _decode_batch(self, batch: list[Message]) -> list[Decoded[T]] | None:
        """The batch's decodable records (poison dead-lettered); None if stopped meanwhile."""
        service = self.service.name
        self._in_flight += len(batch)
        IN_FLIGHT.labels(service).set(self._in_flight)
        BATCH_SIZE.labels(service).observe(len(batch))
        decoded: list[Decoded[T]] = []
        for msg in batch:
            MESSAGES_CONSUMED.labels(service, msg.topic()).inc()
            with bind_correlation(**_correlation(msg)):
                value = await self._decode_with_retry(msg)
            if value is _STOPPED:
                return None
            if value is not _POISON:
                decoded.append(Decoded(msg, value))
        return decoded

    async def _prepare(self, decoded: list[Decoded[T]]) -> list[Decoded[T]]:
        """The service's prepare step in a worker thread; the decoded batch if it fails."""
        if self.service.prepare is None or not decoded:
            return decoded
        try:
            return await asyncio.to_thread(self.service.prepare, decoded)
        except Exception as exc:  # noqa: BLE001 - process decides: poison or outage
            log.info("prepare failed, processing the batch as decoded", error=str(exc))
            return decoded

    async def _complete(self, batch: list[Message], decoded: list[Decoded[T]], started: float) -> None:
        """Process, flush, store offsets: the in-order part of a batch."""
        if decoded and not await self._process_with_retry(decoded):
            return  # stopped during an outage: abandon the batch uncommitted
        if not await self._flush_with_retry():
            return
        self._mark_done(batch)
        self.processed += len(decoded)
        self._in_flight -= len(batch)
        IN_FLIGHT.labels(self.service.name).set(self._in_flight)
        PROCESSING_SECONDS.labels(self.service.name).observe(time.perf_counter() - started)

    def _mark_done(self, batch: list[Message]) -> None:
        """Queue the next offset to read of every partition in the batch for storing.

        The offsets are handed to librdkafka by the thread that polls, just
        before its next poll (:meth:`_store_done_offsets`), not here on the
        event loop: confluent-kafka serialises calls on one consumer, so a
        ``store_offsets`` issued while the poll thread waits in ``consume``
        sleeps until that poll returns (up to 0.5 s when idle), and the whole
        event loop with it.
        """
        with self._done_lock:
            for msg in batch:
                self._done_offsets[(msg.topic(), msg.partition())] = msg.offset() + 1

    def _store_done_offsets(self) -> None:
        """Store the queued offsets (librdkafka commits them on its interval, revocation and close).

        The next batch is polled while this one completes, so a rebalance can
        take a partition away in between; its offset is then not stored, and
        the new owner replays the batch from the last commit (idempotent sinks).
        """
        with self._done_lock:
            done, self._done_offsets = self._done_offsets, {}
        if not done:
            return
        try:
            self._consumer.store_offsets(
                offsets=[TopicPartition(t, p, o) for (t, p), o in done.items()]
            )
        except KafkaException as exc:
            log.warning("offsets not stored, partition reassigned meanwhile", error=str(exc))

    async def _decode_with_retry(self, msg: Message) -> Any:
        """Decode one record: poison is dead-lettered, an outage (registry) is retried."""
        attempt = 0
        while True:
            try:
                return self.service.decode(msg)
            except Exception as exc:  # noqa: BLE001 - classified below
                if self.service.classify(exc) != "retry":
                    self._dead_letter(msg, exc)
                    return _POISON
                attempt += 1
                if not await self._wait_out_outage(exc, attempt):
                    return _STOPPED

    async def _process_with_retry(self, decoded: list[Decoded[T]]) -> bool:
        """Process a batch; isolate poison records; retry outages. False if stopped."""
        attempt = 0
        while True:
            try:
                await self.service.process(decoded)
                break
            except Exception as exc:  # noqa: BLE001 - classified below
                if self.service.classify(exc) != "retry":
                    # A record-level failure: process one by one to find the poison.
                    decoded = await self._isolate_poison(decoded)
                    if not decoded:
                        break
                    continue
                attempt += 1
                if not await self._wait_out_outage(exc, attempt):
                    return False
        self._resume()
        return True

    async def _isolate_poison(self, decoded: list[Decoded[T]]) -> list[Decoded[T]]:
        """Retry records singly; dead-letter the ones that fail for non-outage reasons.

        Returns the records still to be retried because of an outage (empty
        if everything was processed or dead-lettered).
        """
        for index, item in enumerate(decoded):
            with bind_correlation(**_correlation(item.msg)):
                try:
                    await self.service.process([item])
                except Exception as exc:  # noqa: BLE001
                    if self.service.classify(exc) == "retry":
                        return decoded[index:]
                    MESSAGES_FAILED.labels(self.service.name, item.msg.topic()).inc()
                    self._dead_letter(item.msg, exc)
        return []

    async def _flush_with_retry(self) -> bool:
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(self.producer.flush, 30)
                self._resume()
                return True
            except Exception as exc:  # noqa: BLE001
                attempt += 1
                if not await self._wait_out_outage(exc, attempt):
                    return False

    async def _wait_out_outage(self, exc: BaseException, attempt: int) -> bool:
        """Pause, back off (capped, exponential), keep the group alive. False if stopping."""
        dependency = getattr(exc, "dependency", type(exc).__name__)
        DEPENDENCY_OUTAGES.labels(self.service.name, dependency).inc()
        assignment = self._consumer.assignment()
        if assignment:
            self._consumer.pause(assignment)
        self._paused = True
        PAUSED.labels(self.service.name).set(1)
        delay = min(
            self._backoff.max_s,
            self._backoff.initial_s * self._backoff.multiplier ** (attempt - 1),
        )
        log.warning(
            "dependency unavailable, paused", error=str(exc), attempt=attempt, retry_in_s=delay
        )
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            pass
        # Serve heartbeats and rebalance callbacks while paused; nothing is fetched.
        self._consumer.poll(0)
        return self._running

    def _resume(self) -> None:
        """Resume after an outage; a no-op otherwise (it runs after every batch)."""
        if not self._paused:
            return
        assignment = self._consumer.assignment()
        if assignment:
            self._consumer.resume(assignment)
        self._paused = False
        PAUSED.labels(self.service.name).set(0)

    def _dead_letter(self, msg: Message, exc: BaseException) -> None:
        log.warning(
            "dead-lettering record",
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            error=str(exc),
        )
        send_to_dead_letter(self.producer, msg, exc, self.service.group_id)
        MESSAGES_DEAD_LETTERED.labels(self.service.name, msg.topic()).inc()
        self.dead_lettered += 1

    def _report_lag(self) -> None:
        """Lag from the high watermark (unreliable on tansu: clamped at zero)."""
        try:
            positions = self._consumer.position(self._consumer.assignment())
        except Exception:  # noqa: BLE001 - metrics must never break consumption
            return
        for tp in positions:
            if tp.offset < 0:
                continue
            _, high = self._consumer.get_watermark_offsets(tp, cached=True) or (0, 0)
            CONSUMER_LAG.labels(self.service.name, tp.topic, str(tp.partition)).set(
                max(0, high - tp.offset)
            )


def _correlation(msg: Message) -> dict[str, str | int | None]:
    headers = {k: v for k, v in (msg.headers() or [])}
    ids: dict[str, str | int | None] = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
    }
    for key in ("correlation_id", "event_id"):
        value = headers.get(key)
        if isinstance(value, bytes):
            ids[key] = value.decode(errors="replace")
    return ids
