"""The alert service on the real broker: an alert that can never be delivered.

The notifier tests check the dead-letter *callback*; this one checks what the
service wires it to, through the service's public entry point: the alert row
ends ``failed`` with the reason, the undeliverable alert is parked on
``alert.notifications.dlq`` with enough to re-send it, its FAILED outcome is
announced on ``alert.notifications``, and the triggering event is not treated
as poison (nothing on the wafer-assessed DLQ).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from consumers.alerts.main import run_alerts
from infra.kafka.admin import ensure_topics
from infra.kafka.producer import EventProducer
from infra.settings import Settings
from schemas.topics import ALERT_NOTIFICATIONS, DLQ_SUFFIX, WAFER_ASSESSED
from tests.capture import HttpCapture
from tests.factories import sample_records
from tests.pipeline import InProcessService, decode_topic, fetchval, read_topic, wait_until

HOOK = "/mes/hook"


def _rules(path: Path, url: str) -> Path:
    """Critical wafers to one webhook, three quick attempts (JSON is YAML)."""
    path.write_text(json.dumps({
        "channels": {"mes": {"type": "webhook", "url": url, "timeout_s": 5}},
        "rules": [{"name": "critical-to-mes", "match": {"kinds": ["wafer"],
                                                         "min_level": "critical"},
                   "channels": ["mes"]}],
        "retry": {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.02},
    }))
    return path


def _critical_wafer() -> dict[str, Any]:
    event_id = str(uuid.uuid4())
    return {**sample_records()["wafer_assessed"], "event_id": event_id,
            "correlation_id": event_id, "lot_id": "LOT-DLQ", "wafer_id": "W01",
            "severity_level": "CRITICAL", "severity_score": 91.0}


def test_undeliverable_alert_is_failed_dead_lettered_and_announced(
    settings: Settings, http_capture: HttpCapture, tmp_path: Path
) -> None:
    http_capture.fail_first[HOOK] = 1_000  # the receiver is broken for good
    rules = _rules(tmp_path / "rules.yaml", http_capture.url(HOOK))
    settings = settings.model_copy(update={"alerts": settings.alerts.model_copy(
        update={"rules_file": str(rules)})})
    ensure_topics(settings)
    event = _critical_wafer()
    producer = EventProducer(settings)
    producer.send(WAFER_ASSESSED, event["lot_id"], event)
    producer.flush()
    dsn = settings.postgres.url.get_secret_value()
    dlq_topic = settings.topic(ALERT_NOTIFICATIONS.name) + DLQ_SUFFIX

    with InProcessService(run_alerts, settings):
        wait_until(lambda: fetchval(dsn, "SELECT count(*) FROM alerts WHERE status = 'failed'")
                   == 1, 60, "the alert given up on")
        wait_until(lambda: len(read_topic(settings, dlq_topic, 0.5)) == 1, 30,
                   "the alert parked on the DLQ topic")

    assert http_capture.attempts(HOOK) == 3
    assert not http_capture.received(HOOK)
    alert_id = fetchval(dsn, "SELECT id FROM alerts WHERE event_id = $1", event["event_id"])
    reason = fetchval(dsn, "SELECT reason FROM alerts WHERE id = $1", alert_id)
    assert "503" in reason and "3 attempt" in reason
    assert fetchval(dsn, "SELECT count(*) FROM alert_attempts WHERE alert_id = $1 AND NOT ok",
                    alert_id) == 3

    [parked] = read_topic(settings, dlq_topic)
    headers = {k: v.decode() for k, v in parked.headers()}
    assert headers["x-dlq-error-kind"] == "undeliverable"
    assert "503" in headers["x-dlq-error"]
    letter = json.loads(parked.value())
    assert letter["alert_ids"] == [alert_id]
    assert (letter["channel"], letter["recipient"]) == ("mes", "mes")
    assert letter["payload"]["subject"]["event_id"] == event["event_id"]  # enough to re-send

    outcomes = decode_topic(settings, ALERT_NOTIFICATIONS)
    assert {(o["source_event_id"], o["status"]) for o in outcomes} == {
        (event["event_id"], "FAILED")}
    assert not read_topic(settings, settings.topic(WAFER_ASSESSED.name) + DLQ_SUFFIX, 0.5)
