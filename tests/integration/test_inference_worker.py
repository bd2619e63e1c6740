"""Acceptance 3-5 on the inference worker: poison to DLQ, SIGKILL mid-batch, database outage."""

from __future__ import annotations

import signal
from urllib.parse import urlparse

from pydantic import SecretStr

from consumers.inference.main import run_inference
from infra.kafka.admin import ensure_topics
from infra.kafka.producer import EventProducer
from infra.settings import Settings
from schemas.topics import DLQ_SUFFIX, WAFER_SEGMENTED, WAFER_TEST_COMPLETED
from tests.factories import wafer_events
from tests.pipeline import InProcessService, fetchval, read_topic, spawn_service, wait_until
from tests.tcp_proxy import TcpProxy

RESULTS = "SELECT count(*) FROM inference_results"


def InProcessWorker(settings: Settings) -> InProcessService:  # noqa: N802 - reads as a class
    """The real inference worker in this process."""
    return InProcessService(run_inference, settings)


def _publish(settings: Settings, events: list[dict], raw: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[type-arg,assignment]
    producer = EventProducer(settings)
    for event in events:
        producer.send(WAFER_TEST_COMPLETED, event["lot_id"], event)
    for key, value in raw:
        producer.send_raw(settings.topic(WAFER_TEST_COMPLETED.name), key, value, {"event_id": "bad"})
    producer.flush()


def test_poison_goes_to_the_dlq_with_headers_and_the_worker_moves_on(settings: Settings) -> None:
    ensure_topics(settings)
    good = wafer_events(4, seed=11)
    codec = EventProducer(settings).codec
    invalid = {**wafer_events(1, seed=12)[0], "lot_id": "../../etc"}
    inconsistent = wafer_events(1, seed=13)[0]
    inconsistent["die_map"] = {**inconsistent["die_map"], "rows": inconsistent["die_map"]["rows"] + 1}
    topic = settings.topic(WAFER_TEST_COMPLETED.name)
    _publish(settings, good[:2], raw=[
        (b"L1", b"\x00\x01not avro at all"),
        (b"L2", codec.encode("wafer_test_completed", invalid, topic)),
        (b"L3", codec.encode("wafer_test_completed", inconsistent, topic)),
    ])
    _publish(settings, good[2:])
    with InProcessWorker(settings):
        wait_until(lambda: fetchval(settings.postgres.url.get_secret_value(), RESULTS) == 4,
                   90, "4 good wafers processed")
    dlq = read_topic(settings, topic + DLQ_SUFFIX)
    assert len(dlq) == 3
    kinds = sorted(dict(m.headers())["x-dlq-error-kind"].decode() for m in dlq)
    assert kinds == ["invalid_value", "invalid_value", "undecodable"]
    for msg in dlq:
        headers = {k: v.decode() for k, v in msg.headers()}
        assert headers["x-dlq-source-topic"] == topic
        assert int(headers["x-dlq-source-offset"]) >= 0
        assert headers["x-dlq-source-partition"].isdigit()
        assert headers["x-dlq-consumer-group"].endswith("waferstream-inference")
        assert headers["x-dlq-failed-at"].startswith("20")
        assert headers["x-dlq-error"]
    assert {m.key() for m in dlq} == {b"L1", b"L2", b"L3"}
    assert b"not avro at all" in next(m.value() for m in dlq if m.key() == b"L1")


def test_sigkill_mid_batch_then_restart_gives_every_result_exactly_once(settings: Settings) -> None:
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(
        update={"batch_max_messages": 4, "commit_interval_s": 0.5})})
    ensure_topics(settings)
    # Enough wafers that the kill lands mid-stream on a fast machine (80 did not).
    events = wafer_events(400, seed=21)
    _publish(settings, events)
    dsn = settings.postgres.url.get_secret_value()
    worker = spawn_service(settings, "run", "inference")
    try:
        wait_until(lambda: fetchval(dsn, RESULTS) >= 8, 90, "first results")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        killed_at = fetchval(dsn, RESULTS)
        assert killed_at < len(events), "the kill came too late to be mid-stream"
        worker = spawn_service(settings, "run", "inference")
        wait_until(lambda: fetchval(dsn, RESULTS) == len(events), 120, "all results after restart")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, "graceful stop should exit 0"
    ids = [e["event_id"] for e in events]
    for table, column in (("wafers", "event_id"), ("inference_results", "source_event_id")):
        assert fetchval(dsn, f"SELECT count(*) FROM {table}") == len(events)
        assert fetchval(dsn, f"SELECT count(DISTINCT {column}) FROM {table} "
                             f"WHERE {column} = ANY($1::text[])", ids) == len(events)
    clusters = fetchval(dsn, "SELECT count(*) FROM clusters")
    distinct = fetchval(dsn, "SELECT count(DISTINCT (source_event_id, cluster_index)) FROM clusters")
    assert clusters == distinct
    segmented = read_topic(settings, settings.topic(WAFER_SEGMENTED.name))
    seg_ids = {dict(m.headers())["event_id"] for m in segmented}
    assert len(seg_ids) == len(events)  # replays re-send identical event ids, never new ones
    assert not read_topic(settings, settings.topic(WAFER_TEST_COMPLETED.name) + DLQ_SUFFIX, 0.5)


def test_database_outage_pauses_retries_and_resumes_without_loss(settings: Settings) -> None:
    real = urlparse(settings.postgres.url.get_secret_value())
    proxy = TcpProxy(real.hostname or "127.0.0.1", real.port or 5432)
    proxy.up()
    proxied = real._replace(netloc=f"{real.username}@127.0.0.1:{proxy.port}").geturl()
    settings = settings.model_copy(update={"postgres": settings.postgres.model_copy(
        update={"url": SecretStr(proxied)})})
    ensure_topics(settings)
    dsn = real.geturl()
    first, second = wafer_events(30, seed=31)[:10], wafer_events(30, seed=31)[10:]
    with InProcessWorker(settings):
        _publish(settings, first)
        wait_until(lambda: fetchval(dsn, RESULTS) == 10, 90, "results before the outage")
        proxy.down()
        _publish(settings, second)
        wait_until(lambda: _retries() > 0, 30, "the worker noticing the outage")
        assert fetchval(dsn, RESULTS) == 10
        proxy.up()
        wait_until(lambda: fetchval(dsn, RESULTS) == 30, 90, "results after the outage")
    assert not read_topic(settings, settings.topic(WAFER_TEST_COMPLETED.name) + DLQ_SUFFIX, 0.5)
    assert fetchval(dsn, "SELECT count(DISTINCT source_event_id) FROM inference_results") == 30
    proxy.down()


def _retries() -> float:
    from prometheus_client import REGISTRY

    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "waferstream_dependency_retries"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("service") == "inference"
    )
