"""SIGKILL a real service process mid-stream, restart it, and count the results.

Why: the services promise at-least-once consumption with idempotent effects,
i.e. a crash at *any* instant - between a database write and the offset
commit, between an HTTP POST and marking its row - must neither lose a result
nor duplicate one. Graceful stops and in-process restarts (the other
integration tests) never exercise the uncommitted tail that a hard kill
leaves behind; these tests do, with the real ``python -m infra run ...``
entry points:

* the severity processor: every assessment once, lot state counted once per
  wafer despite the replayed batch, each lot excursion once (one row, one
  event id on the topic);
* the alert notifier: the kill lands while a webhook POST is in flight (the
  capture server holds that request), so the alert's row exists but is not
  yet marked; after the restart every alert must still end ``delivered``,
  every alert must have reached the receiver, and any re-send must carry the
  same alert id so the receiver can drop it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from consumers.inference.worker import result_event_id
from consumers.severity.events import assessment_event_id, excursion_event_id
from infra.kafka.admin import ensure_topics
from infra.kafka.producer import EventProducer
from infra.settings import Settings
from schemas.topics import (
    ALERT_NOTIFICATIONS,
    DLQ_SUFFIX,
    LOT_EXCURSIONS,
    WAFER_ASSESSED,
    WAFER_SEGMENTED,
)
from tests.factories import sample_records
from tests.pipeline import (
    decode_topic,
    fetchval,
    read_topic,
    service_logs,
    spawn_service,
    wait_until,
)


def _small_batches(settings: Settings) -> Settings:
    """Small batches and a slow commit, so a kill always leaves an uncommitted tail."""
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(
        update={"batch_max_messages": 4, "commit_interval_s": 0.5})})


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def _stop_gracefully(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise


def _count(dsn: str, query: str, *args: Any) -> int:
    return int(fetchval(dsn, query, *args))


# ---------------------------------------------------------------- severity processor

#: (lot, wafers, {systematic pattern: how many of its wafers show it}); k = 3 by default.
LOTS: tuple[tuple[str, int, dict[str, int]], ...] = (
    ("LOT-K1", 24, {"Scratch": 5, "Loc": 3}),   # two excursions in one lot
    ("LOT-K2", 20, {"Scratch": 3}),             # exactly k
    ("LOT-K3", 20, {"Scratch": 2}),             # below k: no excursion
    ("LOT-K4", 16, {"Donut": 4}),
)


def _segmented(base: dict[str, Any], lot_id: str, wafer_id: str, label: str) -> dict[str, Any]:
    """A wafer-segmented event with ids derived the way the inference worker derives them."""
    source = str(uuid.uuid5(uuid.NAMESPACE_URL, f"wafer-complete/{lot_id}/{wafer_id}"))
    patterned = label != "none"
    return {
        **base,
        "event_id": result_event_id(source, base["model_version"]),
        "correlation_id": source, "source_event_id": source,
        "lot_id": lot_id, "wafer_id": wafer_id, "label": label,
        "patterns": [label] if patterned else [],
        "pattern_probs": {label: 0.9, "none": 0.1} if patterned else {"none": 0.95},
        "clusters": [{**c, "pattern": label} for c in base["clusters"]] if patterned else [],
    }


def _severity_events() -> list[dict[str, Any]]:
    """The lots' wafers interleaved round-robin (each lot's wafers in order)."""
    base = sample_records()["wafer_segmented"]
    per_lot: list[list[dict[str, Any]]] = []
    for lot_id, n, patterns in LOTS:
        labels = [p for p, count in patterns.items() for _ in range(count)]
        labels += ["none"] * (n - len(labels))
        # spread the patterned wafers through the lot so excursions fire mid-stream
        order = sorted(range(n), key=lambda i: (i * 7) % n)
        per_lot.append([_segmented(base, lot_id, f"W{order[i] + 1:02d}", labels[i])
                        for i in range(n)])
    longest = max(len(lot) for lot in per_lot)
    return [lot[i] for i in range(longest) for lot in per_lot if i < len(lot)]


def _publish_segmented(settings: Settings, events: list[dict[str, Any]], pause_s: float) -> None:
    producer = EventProducer(settings)
    for event in events:
        producer.send(WAFER_SEGMENTED, event["lot_id"], event)
        producer.flush()
        time.sleep(pause_s)


def test_severity_sigkill_mid_batch_then_restart_counts_every_wafer_once(
    settings: Settings,
) -> None:
    settings = _small_batches(settings)
    ensure_topics(settings)
    dsn = settings.postgres.url.get_secret_value()
    k = settings.severity.repeat_wafers_k
    events = _severity_events()
    n = len(events)
    expected_excursions = {
        (lot_id, "REPEATED_PATTERN", pattern)
        for lot_id, _, patterns in LOTS for pattern, count in patterns.items() if count >= k
    }
    assert len(expected_excursions) == 4

    proc = spawn_service(settings, "run", "severity")
    publisher: threading.Thread | None = None
    try:
        _publish_segmented(settings, events[:4], 0)
        wait_until(lambda: _count(dsn, "SELECT count(*) FROM assessments") >= 1, 60,
                   "the processor's first assessment")
        # The rest trickles in, so the kill lands while records are still arriving
        # and batches are being processed, not after a single burst.
        publisher = threading.Thread(
            target=_publish_segmented, args=(settings, events[4:], 0.04), daemon=True)
        publisher.start()
        wait_until(lambda: _count(dsn, "SELECT count(*) FROM assessments") >= n // 3, 60,
                   "a third of the wafers assessed")
        _kill(proc)
        killed_at = _count(dsn, "SELECT count(*) FROM assessments")
        assert killed_at < n, "the kill came too late to be mid-stream"
        publisher.join(30)
        proc = spawn_service(settings, "run", "severity")
        wait_until(lambda: _count(dsn, "SELECT count(*) FROM assessments") == n, 60,
                   "every wafer assessed after the restart")
        wait_until(lambda: _count(dsn, "SELECT coalesce(sum(wafer_count), 0) FROM lot_state") == n
                   and _count(dsn, "SELECT count(*) FROM lot_excursions "
                                   "WHERE published_at IS NOT NULL") == len(expected_excursions),
                   30, "lot state and excursions caught up")
    finally:
        if publisher is not None:
            publisher.join(30)
        assert _stop_gracefully(proc) == 0, "graceful stop should exit 0\n" + service_logs(settings, "run", "severity")

    # Assessments: one row per wafer, with the event id the wafer-assessed record carries.
    ids = {assessment_event_id(e["source_event_id"], e["model_version"]): e for e in events}
    assert _count(dsn, "SELECT count(*) FROM assessments") == n
    assert _count(dsn, "SELECT count(DISTINCT (source_event_id, model_version)) "
                       "FROM assessments") == n
    assert _count(dsn, "SELECT count(DISTINCT assessment_event_id) FROM assessments "
                       "WHERE assessment_event_id = ANY($1::text[])", list(ids)) == n
    # Clusters (severity keeps only their count): the replayed wafers were not counted twice.
    assert _count(dsn, "SELECT sum(cluster_count) FROM assessments") == sum(
        len(e["clusters"]) for e in events)

    # Lot state: each lot's wafers counted once, pattern counts as published.
    for lot_id, wafers, patterns in LOTS:
        count = fetchval(dsn, "SELECT wafer_count FROM lot_state WHERE lot_id = $1", lot_id)
        assert count == wafers, lot_id
        counts = json.loads(fetchval(
            dsn, "SELECT pattern_counts FROM lot_state WHERE lot_id = $1", lot_id))
        assert counts == patterns, lot_id

    # Lot excursions: one row per (lot, cause, pattern), published, with the deterministic id.
    rows = json.loads(fetchval(dsn, """SELECT coalesce(json_agg(json_build_array(
                                           lot_id, cause, pattern, event_id, published_at)), '[]')
                                       FROM lot_excursions"""))
    assert sorted((lot, cause, pattern) for lot, cause, pattern, _, _ in rows) == sorted(
        expected_excursions)
    assert all(published is not None for *_, published in rows)
    assert {row[3] for row in rows} == {excursion_event_id(*key) for key in expected_excursions}

    published: dict[tuple[str, str, str], set[str]] = {}
    for record in decode_topic(settings, LOT_EXCURSIONS):
        key = (record["lot_id"], record["cause"], record["pattern"] or "")
        published.setdefault(key, set()).add(record["event_id"])
    # A re-send after the kill (claimed, not yet confirmed) is fine at-least-once, but
    # only with the same event id: one excursion, never two different ones.
    assert published == {key: {excursion_event_id(*key)} for key in expected_excursions}

    assessed = decode_topic(settings, WAFER_ASSESSED)
    assessed_ids = {a["event_id"] for a in assessed}
    assert assessed_ids == set(ids)  # replays re-send identical ids, never new ones
    assert len(assessed) >= n
    assert not read_topic(settings, settings.topic(WAFER_SEGMENTED.name) + DLQ_SUFFIX, 0.5)


# ---------------------------------------------------------------- alert notifier


@dataclass(frozen=True)
class Delivery:
    alert_id: int
    event_id: str


@dataclass
class WebhookReceiver:
    """A local webhook endpoint that records every POST and holds the ``hold_at``-th one
    open (no response) until ``release`` is set, so the notifier can be killed mid-POST."""

    hold_at: int
    delay_s: float = 0.01
    deliveries: list[Delivery] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)

    def event_ids(self) -> set[str]:
        return {d.event_id for d in self.snapshot()}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                delivery = Delivery(int(body["alert_id"]), body["subject"]["event_id"])
                with receiver.lock:
                    receiver.deliveries.append(delivery)
                    hold = len(receiver.deliveries) == receiver.hold_at
                if hold:
                    receiver.held.set()
                    receiver.release.wait(60)
                time.sleep(receiver.delay_s)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                    self.wfile.flush()
                except OSError:
                    pass  # the notifier died with the request open

            def log_message(self, *args: Any) -> None:
                """Keep test output quiet."""

        return Handler


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver(hold_at=15)
    hook.server = ThreadingHTTPServer(("127.0.0.1", 0), hook.handler())
    hook.server.daemon_threads = True
    thread = threading.Thread(target=hook.server.serve_forever, daemon=True)
    thread.start()
    yield hook
    hook.release.set()
    hook.server.shutdown()
    hook.server.server_close()


def _rules_file(path: Path, url: str) -> Path:
    """Every critical wafer goes to one webhook; limits far above this test's volume."""
    path.write_text(json.dumps({  # JSON is YAML
        "channels": {"hook": {"type": "webhook", "url": url, "timeout_s": 30}},
        "rules": [{"name": "every-critical", "match": {"kinds": ["wafer"],
                                                        "min_level": "critical"},
                   "channels": ["hook"]}],
        # A short delivery lease: the restarted notifier resumes the alert the killed one
        # had in flight once the dead instance's lease lapses.
        "throttle": {"dedup_ttl_s": 3600, "delivery_lease_s": 3,
                     "rate_limit": {"max_alerts": 10000, "window_s": 600}},
        "retry": {"max_attempts": 5, "base_delay_s": 0.05, "max_delay_s": 0.2},
    }))
    return path


def _assessed_events(n: int) -> list[dict[str, Any]]:
    """``n`` critical wafer-assessed events, each its own wafer (so dedup never applies)."""
    base = sample_records()["wafer_assessed"]
    events = []
    for i in range(n):
        event_id = str(uuid.uuid4())
        events.append({**base, "event_id": event_id, "correlation_id": event_id,
                       "source_event_id": str(uuid.uuid4()), "lot_id": f"LOT-A{i % 5}",
                       "wafer_id": f"W{i:02d}", "severity_level": "CRITICAL",
                       "severity_score": 90.0})
    return events


def _drop_keys(client: redis.Redis, prefix: str) -> None:
    try:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _alert_rows(dsn: str) -> list[tuple[int, str, str, str]]:
    """(id, event_id, status, wafer_id) of every alert row."""
    rows = json.loads(fetchval(dsn, """SELECT coalesce(json_agg(json_build_array(
                                           id, event_id, status, wafer_id) ORDER BY id), '[]')
                                       FROM alerts"""))
    return [tuple(r) for r in rows]


def test_alerts_sigkill_mid_delivery_then_restart_delivers_every_alert(
    settings: Settings, receiver: WebhookReceiver, redis_url: str, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    settings = _small_batches(settings)
    key_prefix = f"{settings.topic_prefix}waferstream:alerts"
    client = redis.Redis.from_url(redis_url)
    request.addfinalizer(lambda: _drop_keys(client, key_prefix))
    ensure_topics(settings)
    dsn = settings.postgres.url.get_secret_value()
    events = _assessed_events(48)
    n = len(events)
    expected = {e["event_id"] for e in events}
    producer = EventProducer(settings)
    for event in events:
        producer.send(WAFER_ASSESSED, event["lot_id"], event)
    producer.flush()
    env = {"WAFERSTREAM_ALERTS__RULES_FILE": str(_rules_file(tmp_path / "rules.yaml",
                                                             receiver.url)),
           "WAFERSTREAM_ALERTS__DIGEST_FLUSH_INTERVAL_S": "0.5"}

    proc = spawn_service(settings, "run", "alerts", extra_env=env)
    try:
        assert receiver.held.wait(60), "the notifier never reached the held delivery\n" + service_logs(settings, "run", "alerts")
        _kill(proc)  # the held POST is in flight: its row is pending, its 200 never arrives
        receiver.release.set()
        rows_at_kill = _alert_rows(dsn)
        assert len(receiver.snapshot()) == receiver.hold_at < n
        in_flight = receiver.snapshot()[-1].event_id
        assert len(rows_at_kill) < n, "the kill came too late to be mid-stream"
        proc = spawn_service(settings, "run", "alerts", extra_env=env)
        wait_until(lambda: receiver.event_ids() == expected, 60,
                   "every alert at the webhook after the restart")
        try:
            wait_until(lambda: _count(dsn, "SELECT count(*) FROM alerts WHERE status = "
                                           "'delivered'") == n, 10, "every alert row delivered")
        except AssertionError:
            pass  # asserted below, with the rows that are stuck
        time.sleep(1.0)  # anything still in flight (a late re-send) shows up now
    finally:
        receiver.release.set()
        assert _stop_gracefully(proc) == 0, "graceful stop should exit 0\n" + service_logs(settings, "run", "alerts")

    rows = _alert_rows(dsn)
    deliveries = receiver.snapshot()
    received = Counter(d.event_id for d in deliveries)
    stuck = [(r, received[r[1]]) for r in rows if r[2] != "delivered"]
    # One row per expected alert, none lost, none muted by Redis dedup or rate limit.
    assert len(rows) == n and {r[1] for r in rows} == expected
    assert not stuck, (
        "alert rows not delivered after the restart ((id, event_id, status, wafer), times "
        f"received by the webhook): {stuck}\n"
        + service_logs(settings, "run", "alerts", needles=(
            *(row[1] for row, _ in stuck), *(f'"alert_ids": [{row[0]}]' for row, _ in stuck))))
    assert received.keys() == expected  # every alert reached the receiver

    # Re-sends are possible only for the alert in flight at the kill (its POST may have
    # arrived before its row was marked), and must carry the same alert id.
    duplicates = {event_id: c for event_id, c in received.items() if c > 1}
    assert duplicates == {in_flight: 2}, duplicates  # the held POST, then the resumed one
    by_event = {r[1]: r[0] for r in rows}
    assert all(d.alert_id == by_event[d.event_id] for d in deliveries)

    outcomes = decode_topic(settings, ALERT_NOTIFICATIONS)
    assert {o["source_event_id"] for o in outcomes if o["status"] == "DELIVERED"} == expected
    assert {o["status"] for o in outcomes} == {"DELIVERED"}
    assert not read_topic(settings, settings.topic(ALERT_NOTIFICATIONS.name) + DLQ_SUFFIX, 0.5)
    assert not read_topic(settings, settings.topic(WAFER_ASSESSED.name) + DLQ_SUFFIX, 0.5)

    # Redis: one dedup claim per wafer (none left by a failure to mute a later event),
    # nothing queued for a digest.
    assert len(list(client.scan_iter(f"{key_prefix}:dedup:*"))) == n
    assert not list(client.scan_iter(f"{key_prefix}:digest:*"))
    assert not list(client.scan_iter(f"{key_prefix}:lease:*"))  # every lease was given back
