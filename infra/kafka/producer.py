"""The one producer every service uses: idempotent, acks=all, compressed, checked.

A record is only "sent" when the broker acknowledged it: delivery reports are
collected and :meth:`EventProducer.flush` raises :class:`DeliveryFailed` if
any record was not acknowledged, so a caller that stores a consumer offset
after ``flush()`` can never lose a result silently.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog
from confluent_kafka import KafkaError, Message, Producer

from infra.errors import DeliveryFailed
from infra.metrics import MESSAGES_PRODUCED
from infra.settings import Settings
from schemas.topics import TopicSpec
from schemas.wire import AvroCodec, shared_codec

log = structlog.get_logger(__name__)

Headers = dict[str, str | bytes]


class EventProducer:
    """Encode events with the Avro codec and deliver them reliably."""

    def __init__(
        self, settings: Settings, codec: AvroCodec | None = None, **overrides: Any
    ) -> None:
        self.settings = settings
        self.codec = codec or shared_codec(
            settings.kafka.schema_registry_url,
            (
                settings.kafka.schema_registry_auth.get_secret_value()
                if settings.kafka.schema_registry_auth
                else None
            ),
        )
        config: dict[str, Any] = {
            **settings.kafka.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": settings.kafka.compression_type,
            "linger.ms": settings.kafka.linger_ms,
            "message.timeout.ms": 120_000,
            **overrides,
        }
        self._producer = Producer(config)
        self._lock = threading.Lock()
        self._failures: list[str] = []

    def send(
        self,
        spec: TopicSpec,
        key: str,
        record: dict[str, Any],
        headers: Headers | None = None,
    ) -> None:
        """Encode ``record`` with ``spec``'s event schema and queue it for delivery."""
        if spec.event_type is None:
            raise ValueError(f"{spec.name} carries raw bytes; use send_raw")
        topic = self.settings.topic(spec.name)
        value = self.codec.encode(spec.event_type, record, topic)
        all_headers: Headers = {"event_id": record["event_id"]}
        if record.get("correlation_id"):
            all_headers["correlation_id"] = record["correlation_id"]
        all_headers.update(headers or {})
        self.send_raw(topic, key.encode(), value, all_headers)

    def send_raw(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None
    ) -> None:
        """Queue raw bytes (DLQ records, replays) for delivery, waiting if the queue is full."""
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=list((headers or {}).items()),
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            with self._lock:
                self._failures.append(f"{msg.topic()}: {err.str()}")
            log.error("delivery failed", topic=msg.topic(), error=err.str())
        else:
            MESSAGES_PRODUCED.labels(msg.topic()).inc()

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued record; raise DeliveryFailed if any was not acknowledged."""
        remaining = self._producer.flush(timeout_s)
        with self._lock:
            failures, self._failures = self._failures, []
        if remaining:
            failures.append(f"{remaining} records still queued after {timeout_s}s")
        if failures:
            raise DeliveryFailed("; ".join(failures[:5]) + (" ..." if len(failures) > 5 else ""))

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush on shutdown; undelivered records are reported, never dropped silently."""
        self.flush(timeout_s)
