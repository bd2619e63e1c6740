"""The whole pipeline, end to end, on generated wafers whose truth is known (issue #4).

Why this test exists: every other test exercises one service, or feeds a
service hand-made records. Only here do the three real services
(``python -m infra run inference | severity | alerts``, as deployed) run
together on the real broker, PostgreSQL, Redis and object store, with the
shipped ONNX model, while wafer-complete events made by the project's own
generator (:mod:`ml.synth`, which knows every die's truth) go in at the front.
What comes out at the back - database rows, clusters, assessed events, and
alerts that reach a local webhook receiver and a local SMTP server with the
wafer map attached - is checked against what was generated: a critical wafer
alerts once on every channel, a clean wafer (and a merely major one) does not.

The wafers were chosen, with fixed seeds, among maps that the shipped model
classifies unambiguously (top-1 probability >= 0.97; the clean wafer is none
0.99 with a 0.96 margin, and the scratch is chosen as described below;
see ``WAFERS``).
Severity levels follow from ``consumers/severity/scoring.py`` with the
default weights; each chosen wafer's score is at least 6 points away from a
level threshold, so the levels asserted here are not coin flips.

Scratch: the issue asks for "a critical scratch wafer". Two things stand in
the way, and the test states both instead of hiding them:

* the shipped model names real scratches well (model card
  ml/models/model_card.json: Scratch precision 0.79 and recall 0.92 on real
  maps) but the generator's short, thin ones less so (die-level IoU 0.54 on
  synthetic maps). Among the 89 single-scratch maps of the generator (seeds
  4242 and 7, maps 0-599) its top-1 label was Scratch 26 times, Loc 33,
  none 23, others 7; the dominant pattern after clustering was Scratch for
  77. The scratch wafer here (``SCRATCH``) is one the model gets right at
  both levels. It was chosen for an earlier model (v13): among the 21
  forced-scratch maps of seed 4242 (indices 0-399, at least 20 painted
  dies) whose Scratch clusters matched the painted dies within 15 % and
  whose score was at least 6 points from a level threshold, it was the
  longest of the 13 v13 named Scratch (48 painted dies). The shipped model
  names it Scratch more surely (p 0.99, margin 0.98).
* even a perfectly recognised single scratch scores INFO or MINOR with the
  default severity weights (a few % coverage, one to three clusters; this
  one 32), far below CRITICAL (> 80). Fabs treat a scratch as handling damage
  that FA must see whatever its size, so the test configures that policy
  (``severity.pattern_min_level = {"Scratch": "CRITICAL"}``, off by
  default): the scratch wafer is CRITICAL by policy with its score
  unchanged, and alerts on both channels like the near-full wafer.
"""

from __future__ import annotations

import json
import signal
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from consumers.inference.worker import result_event_id
from consumers.severity.events import assessment_event_id
from infra.kafka.admin import ensure_topics
from infra.kafka.producer import EventProducer
from infra.objectstore.factory import open_object_store
from infra.settings import Settings
from ml.serving import MODELS_DIR
from ml.synth import SynthMap, generate
from ml.taxonomy import pattern_index
from producers.events import WaferContext, die_counts, wafer_completed_event
from schemas.topics import (
    ALERT_NOTIFICATIONS,
    DLQ_SUFFIX,
    EVENT_TOPICS,
    WAFER_ASSESSED,
    WAFER_SEGMENTED,
    WAFER_TEST_COMPLETED,
)
from tests.capture import HttpCapture, SmtpCapture
from tests.pipeline import decode_topic, fetch, read_topics, service_logs, spawn_service, wait_until

pytestmark = pytest.mark.integration

MEMBER = "fa-oncall@fab.example"
WEBHOOK_PATH = "/mes/alerts"
WEBHOOK_TOKEN = "tok-e2e"
RULE = "critical-wafers"
SHIPPED_MODEL_VERSION = json.loads((MODELS_DIR / "model_card.json").read_text())["version"]


# ---------------------------------------------------------------- the wafers


@dataclass(frozen=True)
class WaferCase:
    """One generated wafer and what the pipeline must make of it."""

    name: str
    seed: int  # ml.synth stream
    index: int  # map index in that stream
    patterns: tuple[str, ...]  # forced generator patterns = the ground truth
    label: str  # the shipped model's top-1 label
    dominant: str  # assessments.dominant_pattern
    level: str  # assessments.severity_level
    cluster_pattern: str | None  # pattern of the largest cluster; None = no clusters at all
    alerts: bool  # does the "critical" rule fire?

    @property
    def lot_id(self) -> str:
        return f"E2E-{self.name.upper()}"  # one lot per wafer: no lot excursion can interfere

    @property
    def wafer_id(self) -> str:
        return f"{self.lot_id}-W01"

    def synth(self) -> SynthMap:
        return generate(self.seed, self.index, patterns=self.patterns)


# What the shipped model (unet-tu-resnet10t-2026.12.05-b7e24c78-int8-tta2) does with each map,
# measured offline with ml.serving.WaferModel and the pipeline's own cluster/severity code:
#   clean      22x27, 54 fails,  none 0.99 (margin 0.96), no clusters,     INFO 2.51
#   near-full  36x37, 960 fails, Near-full 1.00,  clusters = 960 dies,     CRITICAL 96.72
#   center     27x27, 88 fails,  Center 1.00, one cluster of 54 (truth 52), MINOR 26.50
#   edge-ring  41x31, 298 fails, Edge-Ring 1.00 (margin 0.87), 138 dies for 131 ring dies, MAJOR 60.76
#   scratch    57x51, 234 fails, Scratch 0.99 / Loc 0.01; the 48-die scratch is found as
#              Scratch clusters of 56 dies,      MINOR 31.97 by score, CRITICAL by policy
CLEAN = WaferCase("clean", 4242, 2, (), "none", "none", "INFO", None, alerts=False)
NEAR_FULL = WaferCase("nearfull", 4242, 3, ("Near-full",), "Near-full", "Near-full", "CRITICAL",
                      "Near-full", alerts=True)
CENTER = WaferCase("center", 4242, 13, ("Center",), "Center", "Center", "MINOR", "Center",
                   alerts=False)
EDGE_RING = WaferCase("edgering", 4242, 1, ("Edge-Ring",), "Edge-Ring", "Edge-Ring", "MAJOR",
                      "Edge-Ring", alerts=False)
# Critical by the fab's scratch policy, not by its score (31.97): see the module docstring.
SCRATCH_POLICY = {"Scratch": "CRITICAL"}
SCRATCH = WaferCase("scratch", 4242, 197, ("Scratch",), "Scratch", "Scratch", "CRITICAL", "Scratch",
                    alerts=True)
WAFERS = (CLEAN, NEAR_FULL, CENTER, EDGE_RING, SCRATCH)


@dataclass(frozen=True)
class Published:
    case: WaferCase
    synth: SynthMap
    event: dict[str, Any]

    def truth_mask(self) -> np.ndarray:
        """Dies the generator painted with the case's pattern (all patterns for a mixture)."""
        codes = [pattern_index(p) for p in self.case.patterns]
        return np.isin(self.synth.die_labels, codes)


def wafer_event(case: WaferCase, synth: SynthMap, end: datetime) -> dict[str, Any]:
    """The wafer-complete event, with the context the fab simulator gives its wafers."""
    pitch_mm = 300.0 / max(synth.dies.shape) * 0.9  # as producers.simulator.FabSimulator
    ctx = WaferContext(
        lot_id=case.lot_id, wafer_id=case.wafer_id, product="LOGIC-A7", tester="ATE-01",
        test_program="LOGIC-A7_FT", test_program_rev="r3", facility="FAB7", test_head=1,
        start_time=end - timedelta(minutes=20), end_time=end,
        die_width_mm=pitch_mm, die_height_mm=pitch_mm,
    )
    return wafer_completed_event(ctx, synth.dies)


def write_rules(path: Path, http: HttpCapture, smtp: SmtpCapture) -> Path:
    """Critical wafers go to the MES webhook and, by e-mail, to the FA on-call group.

    Generous throttle: no dedup collision, no rate limit, so no digests.
    JSON is YAML, so ``load_config`` reads it as is.
    """
    rules = {
        "channels": {
            "fa-mail": {"type": "email", "host": "127.0.0.1", "port": smtp.port,
                        "security": "none", "sender": "waferstream@fab.example"},
            "mes": {"type": "webhook", "url": http.url(WEBHOOK_PATH), "token": WEBHOOK_TOKEN},
        },
        "groups": {"fa-oncall": {"members": [MEMBER], "channels": ["fa-mail"]}},
        "rules": [{"name": RULE, "match": {"kinds": ["wafer"], "min_level": "critical"},
                   "groups": ["fa-oncall"], "channels": ["mes"]}],
        "throttle": {"dedup_ttl_s": 3600, "rate_limit": {"max_alerts": 1000, "window_s": 60}},
        "retry": {"max_attempts": 3, "base_delay_s": 0.1, "max_delay_s": 0.5},
        "links": {"wafer": "https://fa.example/wafer/{lot_id}/{wafer_id}"},
    }
    path.write_text(json.dumps(rules, indent=2))
    return path


# ---------------------------------------------------------------- services and observation


class Services:
    """The three real services as subprocesses, each logging to its own file."""

    def __init__(self, settings: Settings, extra_env: dict[str, str]) -> None:
        self.settings = settings
        self.extra_env = extra_env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        self.procs[name] = spawn_service(self.settings, "run", name, extra_env=self.extra_env)

    def tails(self, chars: int = 2500) -> str:
        return "\n".join(
            f"--- {name} (rc={proc.poll()}) ---\n"
            + service_logs(self.settings, "run", name, chars=chars)
            for name, proc in self.procs.items()
        )

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"services exited early: {dead}\n{self.tails()}"

    def stop(self) -> dict[str, int | None]:
        """SIGTERM all, then wait; returns each exit code (None = had to be killed)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                codes[name] = None
        return codes


def end_offsets(records: list[Message]) -> dict[int, int]:
    """Per partition, the offset after the last record read."""
    ends: dict[int, int] = {}
    for msg in records:
        partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def group_reached(settings: Settings, group: str, topic: str, ends: dict[int, int]) -> bool:
    """Has consumer group ``group`` committed at least ``ends`` on ``topic``?"""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group,
                         "enable.auto.commit": False})
    try:  # no subscribe: this only fetches the group's committed offsets, it never joins
        committed = consumer.committed([TopicPartition(topic, p) for p in ends], timeout=10)
        return all(tp.offset >= ends[tp.partition] for tp in committed)
    finally:
        consumer.close()


def test_generated_wafers_flow_through_the_whole_pipeline(
    settings: Settings, tmp_path: Path, http_capture: HttpCapture, smtp_capture: SmtpCapture
) -> None:
    dsn = settings.postgres.url.get_secret_value()
    ensure_topics(settings)  # explicit partition counts, and every DLQ exists to be counted
    rules = write_rules(tmp_path / "alert-rules.yaml", http_capture, smtp_capture)
    services = Services(settings, {
        "WAFERSTREAM_ALERTS__RULES_FILE": str(rules),
        # The fab's policy for handling damage: a scratch is critical whatever its size.
        "WAFERSTREAM_SEVERITY__PATTERN_MIN_LEVEL": json.dumps(SCRATCH_POLICY),
    })

    start = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    published = []
    for n, case in enumerate(WAFERS):
        synth = case.synth()
        event = wafer_event(case, synth, start + timedelta(minutes=n))
        published.append(Published(case, synth, event))
    by_wafer = {p.case.wafer_id: p for p in published}

    try:
        for name in ("inference", "severity", "alerts"):
            services.start(name)
        producer = EventProducer(settings)
        for p in published:
            producer.send(WAFER_TEST_COMPLETED, p.event["lot_id"], p.event)
        producer.close()  # flushes; a producer left open logs errors once the broker is gone

        def all_assessed() -> bool:
            services.check_alive()
            return fetch(dsn, "SELECT count(*) AS n FROM assessments")[0]["n"] == len(WAFERS)

        assessed_topic = settings.topic(WAFER_ASSESSED.name)
        assessed_records: list[Message] = []

        def published_assessed() -> bool:
            assessed_records[:] = read_topics(settings, [assessed_topic])
            return len({m.key() for m in assessed_records}) == len(WAFERS)  # one lot per wafer

        def notifier_done() -> bool:
            services.check_alive()
            group = f"{settings.topic_prefix}waferstream-alerts"
            return group_reached(settings, group, assessed_topic, end_offsets(assessed_records))

        try:
            wait_until(all_assessed, 75, "every wafer assessed")
            wait_until(published_assessed, 20, "every assessment on the wafer-assessed topic")
            wait_until(notifier_done, 20, "the notifier committing past every assessment")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{services.tails()}") from None
    finally:
        codes = services.stop()
    assert codes == {"inference": 0, "severity": 0, "alerts": 0}, services.tails()

    # ---- PostgreSQL: one wafer, one inference result, one assessment per generated wafer
    tables = {t: fetch(dsn, f"SELECT * FROM {t}")
              for t in ("wafers", "inference_results", "assessments")}
    assert {t: len(rows) for t, rows in tables.items()} == dict.fromkeys(tables, len(WAFERS))
    wafers = {r["wafer_id"]: r for r in tables["wafers"]}
    results = {r["source_event_id"]: r for r in tables["inference_results"]}
    assessments = {r["wafer_id"]: r for r in tables["assessments"]}
    clusters: dict[str, list[dict[str, Any]]] = {}
    for row in fetch(dsn, "SELECT * FROM clusters ORDER BY die_count DESC, cluster_index"):
        clusters.setdefault(row["source_event_id"], []).append(row)
    assert set(wafers) == set(by_wafer)
    assert set(assessments) == set(by_wafer)
    assert set(results) == {p.event["event_id"] for p in published}
    assert set(clusters) <= set(results)
    [model_version] = {r["model_version"] for r in results.values()}
    assert model_version == SHIPPED_MODEL_VERSION, "the expectations hold for the shipped model"
    store = open_object_store(settings)

    outcome = {
        w: (results[p.event["event_id"]]["label"], assessments[w]["dominant_pattern"],
            assessments[w]["severity_level"])
        for w, p in by_wafer.items()
    }
    expected = {w: (p.case.label, p.case.dominant, p.case.level) for w, p in by_wafer.items()}
    assert outcome == expected, "(label, dominant pattern, severity) per wafer"

    for wafer_id, p in by_wafer.items():
        case, dies, event_id = p.case, p.synth.dies, p.event["event_id"]
        total, failing = die_counts(dies)
        wafer = wafers[wafer_id]
        assert (wafer["event_id"], wafer["lot_id"]) == (event_id, case.lot_id)
        assert (wafer["grid_rows"], wafer["grid_cols"]) == dies.shape
        assert (wafer["total_dies"], wafer["failing_dies"]) == (total, failing)

        result = results[event_id]
        assert result["result_event_id"] == result_event_id(event_id, model_version)
        if case.label == "none":
            assert result["patterns"] == [], wafer_id
        else:
            assert case.label in result["patterns"], wafer_id
        # The die-level mask is stored losslessly: every failing die, and only those, coded.
        mask = cv2.imdecode(np.frombuffer(store.get(store.key_of(result["mask_uri"])), np.uint8),
                            cv2.IMREAD_UNCHANGED)
        assert mask is not None and mask.shape == dies.shape, wafer_id
        assert np.array_equal(mask > 0, dies == 2), wafer_id

        rows = clusters.get(event_id, [])
        assessment = assessments[wafer_id]
        assert assessment["assessment_event_id"] == assessment_event_id(event_id, model_version)
        assert assessment["cluster_count"] == len(rows), wafer_id
        assert (assessment["total_dies"], assessment["failing_dies"]) == (total, failing)
        assert assessment["failing_dies"] >= assessment["affected_dies"]
        if case.cluster_pattern is None:
            assert rows == [], f"{wafer_id}: a clean wafer has no clusters"
            assert assessment["affected_dies"] == 0
            continue
        truth = p.truth_mask()
        assert rows[0]["pattern"] == case.cluster_pattern, f"{wafer_id}: largest cluster"
        found = sum(r["die_count"] for r in rows if r["pattern"] == case.cluster_pattern)
        # The model names the pattern right: its clusters hold (almost) the painted dies.
        assert 0.8 * truth.sum() <= found <= 1.2 * truth.sum(), (wafer_id, found, truth.sum())

    # ---- Kafka: one distinct assessed (and segmented) event per wafer, no dead letters
    for spec, derive in ((WAFER_SEGMENTED, result_event_id), (WAFER_ASSESSED, assessment_event_id)):
        ids: dict[str, set[str]] = {}
        for record in decode_topic(settings, spec):
            ids.setdefault(record["wafer_id"], set()).add(record["event_id"])
        assert ids == {w: {derive(p.event["event_id"], model_version)} for w, p in by_wafer.items()}
    assessed = {a["wafer_id"]: a for a in decode_topic(settings, WAFER_ASSESSED)}
    assert {w: a["severity_level"] for w, a in assessed.items()} == {
        w: p.case.level for w, p in by_wafer.items()}
    # One reader over the input topic and every DLQ: seeing the 5 inputs proves it reads.
    dlqs = [settings.topic(spec.name) + DLQ_SUFFIX for spec in EVENT_TOPICS]
    inputs = settings.topic(WAFER_TEST_COMPLETED.name)
    seen = sorted(str(m.topic()) for m in read_topics(settings, [inputs, *dlqs]))
    assert seen == [inputs] * len(WAFERS), f"dead letters: {sorted(set(seen) - {inputs})}"
    assert fetch(dsn, "SELECT count(*) AS n FROM lot_excursions")[0]["n"] == 0

    # ---- Alerts: each critical wafer once per channel, delivered; nothing for the others
    critical = [p for p in published if p.case.alerts]
    assert critical and all(p.case.level == "CRITICAL" for p in critical)
    alerts = fetch(dsn, "SELECT * FROM alerts ORDER BY id")
    targets = sorted((a["wafer_id"], a["channel"], a["recipient"], a["rule"]) for a in alerts)
    assert targets == sorted(
        target for p in critical for target in (
            (p.case.wafer_id, "fa-mail", MEMBER, RULE), (p.case.wafer_id, "mes", "mes", RULE)))
    for alert in alerts:
        p = by_wafer[alert["wafer_id"]]
        assert alert["event_id"] == assessed[alert["wafer_id"]]["event_id"]
        assert (alert["lot_id"], alert["severity"]) == (p.case.lot_id, "critical")
        assert alert["status"] == "delivered", alert
        assert alert["delivered_at"] is not None
    attempts = fetch(dsn, "SELECT alert_id, ok FROM alert_attempts")
    assert sorted(a["alert_id"] for a in attempts) == sorted(a["id"] for a in alerts)
    assert all(a["ok"] for a in attempts)
    notifications = decode_topic(settings, ALERT_NOTIFICATIONS)
    assert sorted((n["wafer_id"], n["channel"], n["status"]) for n in notifications) == sorted(
        (a["wafer_id"], a["channel"], "DELIVERED") for a in alerts)

    # Wafers of different lots are processed in parallel: order receipts by wafer.
    critical.sort(key=lambda p: p.case.wafer_id)
    with http_capture.lock:
        webhook = sorted(((r.path, r.headers, r.body) for r in http_capture.requests),
                         key=lambda r: str(r[2].get("subject", {}).get("wafer_id")))
    assert [(path, body["subject"]["wafer_id"]) for path, _, body in webhook] == [
        (WEBHOOK_PATH, p.case.wafer_id) for p in critical]
    for (_, headers, body), p in zip(webhook, critical, strict=True):
        assert headers["authorization"] == f"Bearer {WEBHOOK_TOKEN}"
        assert (body["type"], body["rule"]) == ("alert", RULE)
        subject = body["subject"]
        assert (subject["lot_id"], subject["kind"]) == (p.case.lot_id, "wafer")
        assert subject["severity_level"] == "critical"
        assert subject["dominant_pattern"] == p.case.dominant
        assert subject["event_id"] == assessed[p.case.wafer_id]["event_id"]
        assert body["link"] == f"https://fa.example/wafer/{p.case.lot_id}/{p.case.wafer_id}"
        assert p.case.wafer_id in body["headline"]

    mails = sorted(smtp_capture.messages,
                   key=lambda m: str(m[1]["Subject"]).split(" on wafer ")[-1])
    assert [(rcpts, mail["To"]) for rcpts, mail in mails] == [([MEMBER], MEMBER) for _ in critical]
    for (_, mail), p in zip(mails, critical, strict=True):
        assert mail["Subject"] == (
            f"[waferstream] CRITICAL {p.case.dominant} on wafer {p.case.lot_id}/{p.case.wafer_id}"
            " (LOGIC-A7)")
        [attachment] = list(mail.iter_attachments())
        assert attachment.get_content_type() == "image/png"
        image = cv2.imdecode(np.frombuffer(attachment.get_content(), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.size > 0 and min(image.shape[:2]) >= 32
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 2, "a drawn map, not a blank image"
    quiet = {p.case.wafer_id for p in published if not p.case.alerts}
    traffic = json.dumps([body for _, _, body in webhook]) + "".join(
        str(mail) for _, mail in mails)
    assert not [w for w in quiet if w in traffic], "non-critical wafers reached a receiver"
