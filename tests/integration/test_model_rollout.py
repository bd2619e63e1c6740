"""Hot reload: a PROMOTED lifecycle event swaps the model between batches, nothing lost."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

from infra.kafka.admin import ensure_topics
from infra.kafka.producer import EventProducer
from infra.settings import Settings
from ml.serving import DEFAULT_MODEL_PATH
from schemas.topics import DLQ_SUFFIX, MODEL_LIFECYCLE, WAFER_TEST_COMPLETED
from tests.factories import wafer_events
from tests.integration.test_inference_worker import InProcessWorker, _publish
from tests.pipeline import fetchval, read_topic, wait_until


def _second_model(settings: Settings, tmp_path: Path, version: str) -> Path:
    """The serving model's files under a new version name (same weights, new card)."""
    source = Path(settings.model.path or DEFAULT_MODEL_PATH).parent
    target = tmp_path / version
    shutil.copytree(source, target)
    card = json.loads((target / "model_card.json").read_text())
    card["version"] = version
    (target / "model_card.json").write_text(json.dumps(card))
    return target / "model.onnx"


def _lifecycle(model_path: Path, version: str, action: str, sha: str | None = None) -> dict:  # type: ignore[type-arg]
    event_id = str(uuid.uuid4())
    return {
        "event_id": event_id, "schema_version": 1, "occurred_at": datetime.now(UTC),
        "correlation_id": event_id, "model_name": "wafer-unet", "model_version": version,
        "action": action, "artifact_uri": model_path.as_uri(),
        "sha256": sha or hashlib.sha256(model_path.read_bytes()).hexdigest(),
        "metrics": {"macro_f1": 0.9}, "previous_version": None,
    }


def test_promotion_swaps_between_batches_and_backfill_uses_the_requested_model(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    dsn = settings.postgres.url.get_secret_value()
    candidate = _second_model(settings, tmp_path, "candidate-b")
    tampered = _second_model(settings, tmp_path, "tampered-c")
    events = wafer_events(40, seed=41)
    first, second = events[:20], events[20:]
    producer = EventProducer(settings)
    results = "SELECT count(*) FROM inference_results"
    with InProcessWorker(settings):
        _publish(settings, first)
        wait_until(lambda: fetchval(dsn, results) == 20, 90, "first half on the original model")
        original = fetchval(dsn, "SELECT min(model_version) FROM inference_results")
        producer.send(MODEL_LIFECYCLE, "wafer-unet",
                      _lifecycle(tampered, "tampered-c", "PROMOTED", sha="0" * 64))
        producer.send(MODEL_LIFECYCLE, "wafer-unet", _lifecycle(candidate, "candidate-b",
                                                                "PROMOTED"))
        producer.flush()
        probes: list[dict] = []  # type: ignore[type-arg]
        wait_until(lambda: _probe_served_by_new_model(settings, dsn, probes, original), 60,
                   "the promoted model to serve")
        _publish(settings, second)
        backfill = {**events[0], "event_id": str(uuid.uuid4()), "lane": "BACKFILL",
                    "requested_model": original}
        _publish(settings, [backfill])
        total = len(events) + len(probes) + 1
        wait_until(lambda: fetchval(dsn, results) == total, 90, "all results")
    by_version = {
        v: fetchval(dsn, "SELECT count(*) FROM inference_results WHERE model_version = $1", v)
        for v in (original, "candidate-b", "tampered-c")
    }
    assert by_version["tampered-c"] == 0, "an artifact with the wrong sha256 must never serve"
    assert sum(by_version.values()) == total
    second_ids = [e["event_id"] for e in second]
    assert fetchval(dsn, "SELECT count(*) FROM inference_results WHERE model_version = "
                         "'candidate-b' AND source_event_id = ANY($1::text[])", second_ids) == 20
    assert fetchval(dsn, "SELECT count(*) FROM inference_results WHERE model_version = $1 "
                         "AND source_event_id = ANY($2::text[])", original,
                    [e["event_id"] for e in first]) == 20
    assert fetchval(dsn, "SELECT model_version FROM inference_results WHERE source_event_id=$1",
                    backfill["event_id"]) == original
    assert not read_topic(settings, settings.topic(WAFER_TEST_COMPLETED.name) + DLQ_SUFFIX, 0.5)


def _probe_served_by_new_model(
    settings: Settings, dsn: str, probes: list, original: str  # type: ignore[type-arg]
) -> bool:
    """Publish one more wafer and report whether a new model version served it."""
    probe = {**wafer_events(1, seed=900 + len(probes))[0]}
    probes.append(probe)
    _publish(settings, [probe])
    query = "SELECT model_version FROM inference_results WHERE source_event_id=$1"
    wait_until(lambda: fetchval(dsn, query, probe["event_id"]) is not None, 60, "probe result")
    return fetchval(dsn, query, probe["event_id"]) != original
