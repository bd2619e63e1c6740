"""The severity processor on the real broker and PostgreSQL.

One lot, four wafers, three of them Scratch (k = 3). The processor is
stopped after two wafers and restarted, so the excursion can only fire if
the lot state survived the restart (PostgreSQL lot state); poison goes to the DLQ
without stopping the stream; a full replay adds no rows and no second
excursion.
"""

from __future__ import annotations

import uuid
from typing import Any

from consumers.inference.worker import result_event_id
from consumers.severity.main import run_severity
from infra.kafka.admin import ensure_topics
from infra.kafka.producer import EventProducer
from infra.settings import Settings
from schemas.topics import DLQ_SUFFIX, LOT_EXCURSIONS, WAFER_ASSESSED, WAFER_SEGMENTED
from schemas.wire import shared_codec
from tests.factories import sample_records
from tests.pipeline import InProcessService, fetchval, read_topic, wait_until


def InProcessSeverity(settings: Settings) -> InProcessService:  # noqa: N802 - reads as a class
    """The real severity processor in this process."""
    return InProcessService(run_severity, settings)


def _segmented(wafer_id: str, label: str) -> dict[str, Any]:
    """A wafer-segmented event of lot LOT-S1, with ids derived the way the worker derives them."""
    record = sample_records()["wafer_segmented"]
    source = str(uuid.uuid5(uuid.NAMESPACE_URL, f"wafer-complete/{wafer_id}"))
    scratch = label == "Scratch"
    return {
        **record,
        "event_id": result_event_id(source, record["model_version"]),
        "correlation_id": source, "source_event_id": source,
        "lot_id": "LOT-S1", "wafer_id": wafer_id, "label": label,
        "patterns": [label] if scratch else [],
        "clusters": record["clusters"] if scratch else [],
    }


def _publish(settings: Settings, events: list[dict[str, Any]], poison: bool = False) -> None:
    producer = EventProducer(settings)
    for event in events:
        producer.send(WAFER_SEGMENTED, event["lot_id"], event)
    if poison:
        producer.send_raw(settings.topic(WAFER_SEGMENTED.name), b"LOT-S1", b"\xc3\x01garbage")
    producer.flush()


def _count(settings: Settings, table: str) -> int:
    return int(fetchval(settings.postgres.url.get_secret_value(), f"SELECT count(*) FROM {table}"))


def _assessed(settings: Settings) -> list[str]:
    """Wafer ids of the wafer-assessed records published so far, in no particular order."""
    codec = shared_codec()
    return [codec.decode(m.value(), "wafer_assessed")["wafer_id"]
            for m in read_topic(settings, settings.topic(WAFER_ASSESSED.name))]


def test_excursion_once_per_lot_across_restart_poison_and_replay(settings: Settings) -> None:
    wafers = [_segmented("W1", "Scratch"), _segmented("W2", "none"),
              _segmented("W3", "Scratch"), _segmented("W4", "Scratch")]
    segmented_topic = settings.topic(WAFER_SEGMENTED.name)
    ensure_topics(settings)  # before the first publish, or the broker auto-creates 4 partitions
    with InProcessSeverity(settings):
        _publish(settings, wafers[:2], poison=True)
        wait_until(lambda: _count(settings, "assessments") == 2, 30, "first two wafers")
        wait_until(lambda: len(read_topic(settings, segmented_topic + DLQ_SUFFIX)) == 1,
                   15, "poison record dead-lettered")
    assert _count(settings, "lot_excursions") == 0  # one Scratch wafer so far

    _publish(settings, wafers[2:])
    with InProcessSeverity(settings):
        wait_until(lambda: _count(settings, "assessments") == 4, 30, "all four wafers")
        wait_until(lambda: _count(settings, "lot_excursions") == 1, 10, "the excursion row")
        _publish(settings, wafers)  # a full replay
        # W4's replay is the last record of the lot's partition: once it is re-assessed,
        # the whole replay went through (at-least-once may add redeliveries, hence >=).
        wait_until(lambda: _assessed(settings).count("W4") >= 2, 30, "the replay processed")

    assert _count(settings, "assessments") == 4
    assert _count(settings, "lot_excursions") == 1
    dsn = settings.postgres.url.get_secret_value()
    assert fetchval(dsn, "SELECT wafer_count FROM lot_state WHERE lot_id = 'LOT-S1'") == 4
    assert fetchval(dsn, "SELECT published_at IS NOT NULL FROM lot_excursions") is True

    codec = shared_codec()
    assessed = [codec.decode(m.value(), "wafer_assessed")
                for m in read_topic(settings, settings.topic(WAFER_ASSESSED.name))]
    assert len(assessed) >= 8
    assert len({a["event_id"] for a in assessed}) == 4  # replays carry the same ids
    assert {a["wafer_id"]: a["dominant_pattern"] for a in assessed} == {
        "W1": "Scratch", "W2": "none", "W3": "Scratch", "W4": "Scratch"}

    excursions = read_topic(settings, settings.topic(LOT_EXCURSIONS.name))
    assert len(excursions) == 1
    excursion = codec.decode(excursions[0].value(), "lot_excursion")
    assert excursions[0].key() == b"LOT-S1"
    assert (excursion["cause"], excursion["pattern"]) == ("REPEATED_PATTERN", "Scratch")
    assert excursion["wafer_ids"] == ["W1", "W3", "W4"]  # W1 came before the restart

    [dead] = read_topic(settings, segmented_topic + DLQ_SUFFIX)
    headers = dict(dead.headers())
    assert dead.value() == b"\xc3\x01garbage"
    assert headers["x-dlq-error-kind"] == b"undecodable"
    assert headers["x-dlq-source-topic"].decode() == segmented_topic
