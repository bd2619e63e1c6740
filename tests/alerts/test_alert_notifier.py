"""End to end: events in, alerts out through real HTTP/SMTP endpoints, rows in PostgreSQL."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image
from prometheus_client import REGISTRY

from tests.alerts.conftest import Env, make_config, make_subject
from tests.capture import HttpCapture, SmtpCapture


def sent(channel: str) -> float:
    return REGISTRY.get_sample_value("alerts_sent_total", {"channel": channel}) or 0.0


def test_critical_scratch_wafer_reaches_webhook_slack_and_email_with_map(
    env: Env, http_capture: HttpCapture, smtp_capture: SmtpCapture
) -> None:
    config = make_config(http_capture, smtp_capture)
    subject = make_subject(lot_id="LOT 42", wafer_id="07")
    mail_sent_before = sent("fa-mail")

    async def scenario() -> list:
        async with env.notifier(config) as notifier:
            return await notifier.handle(subject)

    outcomes = asyncio.run(scenario())
    assert sorted((o.channel, o.status) for o in outcomes) == [
        ("fa-mail", "delivered"),
        ("fa-slack", "delivered"),
        ("mes", "delivered"),
    ]

    [hook] = http_capture.received("/mes")
    assert hook["type"] == "alert" and hook["rule"] == "logic-critical"
    assert hook["subject"]["event_id"] == subject.event_id
    assert hook["subject"]["top_clusters"][0]["die_count"] == 18
    assert hook["link"] == "https://fa.example/wafer/LOT%2042/07"
    [mes_request] = [r for r in http_capture.requests if r.path == "/mes"]
    assert mes_request.headers["authorization"] == "Bearer tok-123"

    [slack] = http_capture.received("/slack/T000/B000/XXXX")
    assert slack["text"].startswith("CRITICAL Scratch on wafer LOT 42/07")
    assert slack["blocks"][0]["type"] == "header"
    assert slack["blocks"][-1]["elements"][0]["url"] == hook["link"]

    [(rcpts, mail)] = smtp_capture.messages
    assert rcpts == ["alice@fab.example"]
    assert "CRITICAL Scratch" in mail["Subject"]
    body = mail.get_body(("plain",))
    assert body is not None
    assert "https://fa.example/wafer/LOT%2042/07" in body.get_content()
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_content_type() == "image/png"
    image = Image.open(io.BytesIO(attachment.get_content()))
    image.load()
    assert image.format == "PNG" and image.width > 26 and image.height > 26

    rows = asyncio.run(env.fetch("SELECT status, delivered_at, severity FROM alerts"))
    assert [(r["status"], r["severity"]) for r in rows] == [("delivered", "critical")] * 3
    assert all(r["delivered_at"] is not None for r in rows)
    assert sent("fa-mail") == mail_sent_before + 1


def test_info_wafer_alerts_nobody(
    env: Env, http_capture: HttpCapture, smtp_capture: SmtpCapture
) -> None:
    config = make_config(http_capture, smtp_capture)

    async def scenario() -> list:
        async with env.notifier(config) as notifier:
            return await notifier.handle(make_subject(level="info", score=3))

    assert asyncio.run(scenario()) == []
    assert http_capture.requests == [] and smtp_capture.messages == []
    assert asyncio.run(env.fetch("SELECT id FROM alerts")) == []


def test_replayed_event_makes_one_row_and_one_delivery(env: Env, http_capture: HttpCapture) -> None:
    config = make_config(http_capture, throttle={"dedup_ttl_s": 0.001})  # dedup cannot help here
    subject = make_subject()

    async def scenario() -> tuple[list, list]:
        async with env.notifier(config) as notifier:
            first = await notifier.handle(subject)
            await asyncio.sleep(0.01)  # the dedup key has expired: only the database guards
            return first, await notifier.handle(subject)

    first, replay = asyncio.run(scenario())
    assert {o.status for o in first} == {"delivered"}
    assert {o.status for o in replay} == {"duplicate"} and len(replay) == len(first)
    # The replay names the alert and its final status, so the service can announce it
    # again (the first announcement may have died with a crashed instance).
    assert sorted((o.alert_id, o.final_status) for o in replay) == sorted(
        (o.alert_id, "delivered") for o in first)
    assert len(http_capture.received("/mes")) == 1
    assert len(http_capture.received("/slack/T000/B000/XXXX")) == 1
    rows = asyncio.run(env.fetch("SELECT id FROM alerts"))
    assert len(rows) == 2
    attempts = asyncio.run(env.fetch("SELECT alert_id FROM alert_attempts"))
    assert len(attempts) == 2


def test_map_that_cannot_be_rendered_still_sends_the_email(
    env: Env, smtp_capture: SmtpCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_render(*args: object, **kwargs: object) -> bytes:
        raise ValueError("renderer bug")

    monkeypatch.setattr("consumers.alerts.notifier.render_wafer_png", broken_render)

    async def scenario() -> list:
        async with env.notifier(make_config(smtp=smtp_capture)) as notifier:
            return await notifier.handle(make_subject())

    assert [o.status for o in asyncio.run(scenario())] == ["delivered"]
    [(_, mail)] = smtp_capture.messages
    assert list(mail.iter_attachments()) == []
