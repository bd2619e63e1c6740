"""Every service serves Prometheus metrics; log lines carry the event's correlation ids."""

from __future__ import annotations

import json
import urllib.request

import pytest

from infra.kafka.admin import ensure_topics
from infra.settings import Settings
from schemas.topics import WAFER_TEST_COMPLETED
from tests.factories import wafer_events
from tests.integration.test_inference_worker import InProcessWorker, _publish
from tests.pipeline import fetchval, wait_until
from tests.ports import free_port


def test_worker_serves_metrics_and_logs_correlation_ids(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    settings = settings.model_copy(update={"observability": settings.observability.model_copy(
        update={"metrics_port": port, "log_format": "json"})})
    ensure_topics(settings)
    events = wafer_events(3, seed=51)
    _publish(settings, events, raw=[(b"LX", b"junk")])
    with InProcessWorker(settings):
        wait_until(lambda: fetchval(settings.postgres.url.get_secret_value(),
                                    "SELECT count(*) FROM inference_results") == 3, 90, "results")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    topic = settings.topic(WAFER_TEST_COMPLETED.name)
    for family in ("waferstream_messages_consumed_total", "waferstream_messages_dead_lettered_total",
                   "waferstream_processing_seconds_bucket", "waferstream_batch_size_bucket",
                   "waferstream_in_flight", "waferstream_messages_produced_total"):
        assert family in body, family
    consumed = [line for line in body.splitlines()
                if line.startswith("waferstream_messages_consumed_total") and topic in line]
    assert consumed and float(consumed[0].rsplit(" ", 1)[1]) >= 4

    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()
             if line.startswith("{")]
    dead = [line for line in lines if line.get("event") == "dead-lettering record"]
    assert dead and dead[0]["event_id"] == "bad" and dead[0]["topic"] == topic
    assert all("timestamp" in line and "level" in line for line in lines)
