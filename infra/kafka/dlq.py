"""Dead-letter routing: a poison record is parked with the reason, never dropped.

The record's original key, value and headers are kept byte for byte, and
``x-dlq-*`` headers say why and where it came from, so it can be inspected and
replayed to the source topic once the cause is fixed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from confluent_kafka import Message

from infra.kafka.producer import EventProducer
from schemas.errors import EventError
from schemas.topics import DLQ_SUFFIX


def dead_letter_headers(msg: Message, exc: BaseException, group: str) -> dict[str, str | bytes]:
    """The headers that name the error and the record's origin."""
    kind = exc.kind if isinstance(exc, EventError) else f"unhandled:{type(exc).__name__}"
    headers: dict[str, str | bytes] = {k: v for k, v in (msg.headers() or []) if v is not None}
    headers.update(
        {
            "x-dlq-error-kind": kind,
            "x-dlq-error": str(exc)[:2000],
            "x-dlq-source-topic": msg.topic() or "",
            "x-dlq-source-partition": str(msg.partition()),
            "x-dlq-source-offset": str(msg.offset()),
            "x-dlq-consumer-group": group,
            "x-dlq-failed-at": datetime.now(UTC).isoformat(),
        }
    )
    return headers


def send_to_dead_letter(
    producer: EventProducer, msg: Message, exc: BaseException, group: str
) -> None:
    """Queue ``msg`` for its topic's DLQ; the caller flushes before committing."""
    producer.send_raw(
        f"{msg.topic()}{DLQ_SUFFIX}", msg.key(), msg.value(), dead_letter_headers(msg, exc, group)
    )
