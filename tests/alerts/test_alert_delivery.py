"""Retries, dead letters and secret hygiene when channels misbehave."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from structlog.testing import capture_logs

from consumers.alerts import AlertConfig
from consumers.alerts.channels import DeliveryError, Redactor
from consumers.alerts.channels.http import post_json
from consumers.alerts.channels.webhook import WebhookChannel
from consumers.alerts.delivery import RetryPolicy
from tests.alerts.conftest import Env, make_config, make_subject
from tests.capture import HttpCapture
from tests.ports import free_port

NEVER = 10**6


def webhook_only(http: HttpCapture) -> AlertConfig:
    """Only the MES webhook: one target, so attempt counts are unambiguous."""
    config = make_config(http)
    rule = config.rules[0].model_copy(update={"groups": ()})
    return config.model_copy(update={"groups": {}, "rules": (rule,)})


def test_webhook_down_for_a_while_is_retried_and_delivered_exactly_once(
    env: Env, http_capture: HttpCapture
) -> None:
    http_capture.fail_first["/mes"] = 2

    async def scenario() -> list:
        async with env.notifier(webhook_only(http_capture)) as notifier:
            return await notifier.handle(make_subject())

    [outcome] = asyncio.run(scenario())
    assert outcome.status == "delivered"
    assert http_capture.attempts("/mes") == 3
    assert len(http_capture.received("/mes")) == 1
    attempts = asyncio.run(
        env.fetch(
            "SELECT attempt, ok, error FROM alert_attempts WHERE alert_id = $1 ORDER BY attempt",
            outcome.alert_id,
        )
    )
    assert [(a["attempt"], a["ok"], a["error"]) for a in attempts] == [
        (1, False, "HTTP 503 Service Unavailable"),
        (2, False, "HTTP 503 Service Unavailable"),
        (3, True, None),
    ]
    assert env.dead_letters == []


def test_never_delivered_goes_to_dead_letter_and_row_says_failed(
    env: Env, http_capture: HttpCapture
) -> None:
    http_capture.fail_first["/mes"] = NEVER
    subject = make_subject()

    async def scenario() -> list:
        async with env.notifier(webhook_only(http_capture)) as notifier:
            return await notifier.handle(subject)

    [outcome] = asyncio.run(scenario())
    assert outcome.status == "failed"
    assert http_capture.attempts("/mes") == 3
    [letter] = env.dead_letters
    assert letter.alert_ids == (outcome.alert_id,)
    assert letter.channel == "mes"
    assert letter.reason == "gave up after 3 attempt(s): HTTP 503 Service Unavailable"
    assert letter.payload["subject"]["event_id"] == subject.event_id  # enough to re-send
    [row] = asyncio.run(env.fetch("SELECT status, reason, delivered_at FROM alerts"))
    assert (row["status"], row["reason"], row["delivered_at"]) == ("failed", letter.reason, None)
    assert len(asyncio.run(env.fetch("SELECT 1 FROM alert_attempts WHERE NOT ok"))) == 3


def test_failed_delivery_releases_dedup_so_the_next_event_is_not_muted(
    env: Env, http_capture: HttpCapture
) -> None:
    http_capture.fail_first["/mes"] = 3  # exactly the first event's attempts

    async def scenario() -> tuple[list, list]:
        async with env.notifier(webhook_only(http_capture)) as notifier:
            return (
                await notifier.handle(make_subject(event_id="first")),
                await notifier.handle(make_subject(event_id="retest")),
            )

    first, second = asyncio.run(scenario())
    assert [o.status for o in first] == ["failed"]
    assert [o.status for o in second] == ["delivered"]


def test_permanent_http_error_is_not_retried(env: Env, http_capture: HttpCapture) -> None:
    http_capture.fail_first["/mes"] = NEVER
    http_capture.status_on_fail["/mes"] = 404

    async def scenario() -> list:
        async with env.notifier(webhook_only(http_capture)) as notifier:
            return await notifier.handle(make_subject())

    [outcome] = asyncio.run(scenario())
    assert outcome.status == "failed"
    assert outcome.reason == "permanent failure after 1 attempt(s): HTTP 404 Not Found"
    assert http_capture.attempts("/mes") == 1
    assert len(env.dead_letters) == 1


def test_backoff_is_capped_exponential_with_jitter() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_s=1.0, max_delay_s=8.0)
    rng = random.Random(7)
    for failed_attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [policy.delay_s(failed_attempt, rng) for _ in range(200)]
        assert 0.0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # jitter covers the range, not a constant
        assert len(set(delays)) > 100


def test_secrets_never_reach_logs_rows_or_dead_letters(env: Env, http_capture: HttpCapture) -> None:
    secrets = {
        "slack": "xoxb-SLACK-PATH-SECRET",
        "hook": "HOOK-PATH-SECRET",
        "token": "BEARER-TOKEN-SECRET",
        "smtp": "SMTP-PASSWORD-SECRET",
    }
    closed = free_port()  # nothing listens: connection errors, whose texts may carry URLs
    config = make_config(
        http_capture,
        channels={
            "fa-slack": {"type": "slack", "url": http_capture.url(f"/slack/{secrets['slack']}")},
            "mes": {
                "type": "webhook",
                "url": f"http://127.0.0.1:{closed}/{secrets['hook']}",
                "token": secrets["token"],
            },
            "fa-mail": {
                "type": "email",
                "host": "127.0.0.1",
                "port": closed,
                "security": "none",
                "username": "alerts",
                "password": secrets["smtp"],
                "sender": "waferstream@fab.example",
            },
        },
        groups={
            "fa-logic": {"members": ["alice@fab.example"], "channels": ["fa-mail", "fa-slack"]}
        },
    )
    http_capture.fail_first[f"/slack/{secrets['slack']}"] = NEVER

    async def scenario() -> list:
        async with env.notifier(config) as notifier:
            return await notifier.handle(make_subject())

    with capture_logs() as logs:
        outcomes = asyncio.run(scenario())

    assert sorted(o.status for o in outcomes) == ["failed"] * 3
    assert sum(1 for e in logs if e["event"] == "alert.attempt_failed") == 9
    rows = asyncio.run(
        env.fetch("SELECT reason FROM alerts UNION ALL SELECT error FROM alert_attempts")
    )
    haystack = "\n".join(
        [repr(logs), repr(env.dead_letters), *(str(r["reason"]) for r in rows), repr(config)]
    )
    for secret in secrets.values():
        assert secret not in haystack
    assert "HTTP 503" in haystack and "ConnectionRefusedError" in haystack


def test_http_errors_that_quote_the_url_are_redacted() -> None:
    """httpx puts the request URL into some exception texts; the reason must not keep it."""
    url = "http://[SECRET-IN-URL]/hook"  # invalid IPv6 host: httpx echoes it in the error

    async def scenario() -> DeliveryError:
        async with httpx.AsyncClient() as client:
            with pytest.raises(DeliveryError) as err:
                await post_json(client, url, {}, redact=Redactor(["SECRET-IN-URL"]), timeout_s=1)
        return err.value

    error = asyncio.run(scenario())
    assert "SECRET-IN-URL" not in error.reason and "***" in error.reason
    assert error.retryable is False  # a malformed URL will not heal by waiting


def test_unexpected_channel_exception_is_retried_then_dead_lettered_without_its_text(
    env: Env, http_capture: HttpCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_send(self: WebhookChannel, message: object, recipient: str) -> None:
        raise RuntimeError("bug while posting to http://user:LEAKED@mes/")

    monkeypatch.setattr(WebhookChannel, "send", broken_send)

    async def scenario() -> list:
        async with env.notifier(webhook_only(http_capture)) as notifier:
            return await notifier.handle(make_subject())

    with capture_logs() as logs:
        [outcome] = asyncio.run(scenario())
    assert outcome.status == "failed"
    assert outcome.reason == "gave up after 3 attempt(s): unexpected RuntimeError in channel mes"
    assert [letter.reason for letter in env.dead_letters] == [outcome.reason]
    assert "LEAKED" not in repr(logs)
