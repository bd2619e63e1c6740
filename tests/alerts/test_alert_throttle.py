"""No-spam behaviour shared through Redis by two notifier instances running concurrently."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from consumers.alerts import Notifier
from consumers.alerts.notifier import DigestOutcome
from tests.alerts.conftest import Env, make_config, make_subject
from tests.capture import HttpCapture

SLACK = "/slack/T000/B000/XXXX"


def test_same_event_on_two_instances_is_delivered_once(env: Env, http_capture: HttpCapture) -> None:
    config = make_config(http_capture)
    subject = make_subject()

    async def scenario() -> list:
        async with env.notifier(config) as a, env.notifier(config) as b:
            results = await asyncio.gather(*(n.handle(subject) for n in (a, b, a, b)))
        return [o for outcomes in results for o in outcomes]

    outcomes = asyncio.run(scenario())
    assert Counter(o.status for o in outcomes) == {"delivered": 2, "duplicate": 6}
    assert len(http_capture.received("/mes")) == 1
    assert len(http_capture.received(SLACK)) == 1


def test_overlapping_events_for_one_wafer_are_deduplicated_across_instances(
    env: Env, http_capture: HttpCapture
) -> None:
    config = make_config(http_capture)
    # A re-test of the same wafer: new event ids, same lot/wafer and rule.
    subjects = [make_subject(event_id=f"retest-{i}") for i in range(4)]
    other_wafer = make_subject(event_id="other", wafer_id="08")

    async def scenario() -> list:
        async with env.notifier(config) as a, env.notifier(config) as b:
            jobs = [(a if i % 2 else b).handle(s) for i, s in enumerate([*subjects, other_wafer])]
            results = await asyncio.gather(*jobs)
        return [o for outcomes in results for o in outcomes]

    outcomes = asyncio.run(scenario())
    assert Counter(o.status for o in outcomes) == {"delivered": 4, "suppressed": 6}
    mes = http_capture.received("/mes")
    assert sorted(m["subject"]["wafer_id"] for m in mes) == ["07", "08"]
    rows = asyncio.run(env.fetch("SELECT status, reason FROM alerts WHERE status = 'suppressed'"))
    assert len(rows) == 6 and all("LOT042/07 already alerted" in r["reason"] for r in rows)


async def _flush_until(
    notifiers: list[Notifier], expected: int, deadline_s: float
) -> list[DigestOutcome]:
    """Flush from every instance at once, as the service would, until ``expected`` digests
    came out (each window closes at its own time) or the deadline passes."""
    end = time.monotonic() + deadline_s
    flushed: list[DigestOutcome] = []
    while len(flushed) < expected and time.monotonic() < end:
        results = await asyncio.gather(*(n.flush_digests() for n in notifiers))
        flushed += [d for r in results for d in r]
        await asyncio.sleep(0.05)
    return flushed


def test_burst_over_the_rate_limit_rolls_up_into_one_digest(
    env: Env, http_capture: HttpCapture
) -> None:
    window_s = 1.5
    config = make_config(http_capture, rate_limit={"max_alerts": 3, "window_s": window_s})
    burst = [make_subject(wafer_id=f"{w:02d}") for w in range(1, 9)]

    async def scenario() -> tuple[list, list[DigestOutcome], list[DigestOutcome]]:
        async with env.notifier(config) as a, env.notifier(config) as b:
            started = time.monotonic()
            results = await asyncio.gather(*((a, b)[i % 2].handle(s) for i, s in enumerate(burst)))
            assert time.monotonic() - started < window_s, "burst must fit in one window"
            early = await a.flush_digests() + await b.flush_digests()
            assert early == [], "no digest before the window closes"
            flushed = await _flush_until([a, b], expected=2, deadline_s=window_s + 2)
            again = await a.flush_digests() + await b.flush_digests()
        return [o for r in results for o in r], flushed, again

    outcomes, flushed, again = asyncio.run(scenario())
    per_channel = Counter((o.channel, o.status) for o in outcomes)
    assert per_channel == {
        ("mes", "delivered"): 3,
        ("mes", "digested"): 5,
        ("fa-slack", "delivered"): 3,
        ("fa-slack", "digested"): 5,
    }
    assert again == []
    assert sorted((d.channel, len(d.alert_ids), d.ok) for d in flushed) == [
        ("fa-slack", 5, True),
        ("mes", 5, True),
    ]

    mes = http_capture.received("/mes")
    digests = [m for m in mes if m["type"] == "digest"]
    assert len(mes) == 4 and len(digests) == 1
    digested_ids = {o.alert_id for o in outcomes if o.channel == "mes" and o.status == "digested"}
    assert {item["alert_id"] for item in digests[0]["alerts"]} == digested_ids
    links = [item["link"] for item in digests[0]["alerts"]]
    assert all(link.startswith("https://fa.example/wafer/LOT042/") for link in links)
    [slack_digest] = [s for s in http_capture.received(SLACK) if s["text"].startswith("Digest: 5")]
    assert "#" in slack_digest["blocks"][1]["text"]["text"]

    rows = asyncio.run(env.fetch("SELECT delivered_at FROM alerts WHERE status = 'digested'"))
    assert len(rows) == 10 and all(r["delivered_at"] is not None for r in rows)
