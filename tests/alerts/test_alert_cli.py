"""``waferstream alerts list|ack`` against a real database."""

from __future__ import annotations

import asyncio
import importlib
import json

from click.testing import CliRunner

from consumers.alerts import metrics
from consumers.alerts.cli import ALERT_COMMANDS
from infra.settings import load_settings
from tests.alerts.conftest import Env, make_config, make_subject
from tests.capture import HttpCapture

[ALERTS] = ALERT_COMMANDS


def _runner(dsn: str) -> CliRunner:
    """A runner whose central settings point at ``dsn`` (the settings cache is reset)."""
    load_settings.cache_clear()
    return CliRunner(env={"WAFERSTREAM_POSTGRES__URL": dsn})


def seed(env: Env, http: HttpCapture) -> None:
    """Two delivered alerts for LOT042 (mes + slack), then one failed webhook for LOT077."""

    async def scenario() -> None:
        async with env.notifier(make_config(http)) as notifier:
            await notifier.handle(make_subject(lot_id="LOT042"))
            http.fail_first["/mes"] = 10**6
            await notifier.handle(make_subject(lot_id="LOT077"))

    asyncio.run(scenario())


def test_list_filters_and_json(env: Env, http_capture: HttpCapture) -> None:
    seed(env, http_capture)
    runner = _runner(env.dsn)

    result = runner.invoke(ALERTS, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 4
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)  # newest first

    failed = runner.invoke(ALERTS, ["list", "--status", "failed", "--json"])
    [row] = [json.loads(line) for line in failed.stdout.splitlines()]
    assert (row["lot_id"], row["channel"]) == ("LOT077", "mes")
    assert row["reason"].startswith("gave up after 3 attempt(s)")

    by_lot = runner.invoke(ALERTS, ["list", "--lot", "LOT042", "--limit", "1"])
    assert by_lot.exit_code == 0
    [line] = by_lot.output.splitlines()
    assert "LOT042/07" in line and "delivered" in line and "unacked" in line

    bad = runner.invoke(ALERTS, ["list", "--status", "lost"])
    assert bad.exit_code == 2


def test_ack_records_the_first_acknowledgement(env: Env, http_capture: HttpCapture) -> None:
    seed(env, http_capture)
    runner = _runner(env.dsn)
    failed = asyncio.run(env.fetch("SELECT id FROM alerts WHERE status = 'failed'"))
    [alert_id] = [r["id"] for r in failed]

    first = runner.invoke(ALERTS, ["ack", str(alert_id), "--by", "alice"])
    assert first.exit_code == 0 and f"alert {alert_id} acknowledged by alice" in first.output
    second = runner.invoke(ALERTS, ["ack", str(alert_id), "--by", "bob"])
    assert second.exit_code == 0 and "already acknowledged by alice" in second.output

    [row] = asyncio.run(env.fetch("SELECT acked_by, acked_at FROM alerts WHERE id = $1", alert_id))
    assert row["acked_by"] == "alice" and row["acked_at"] is not None
    listed = runner.invoke(ALERTS, ["list", "--status", "failed"])
    assert "acked by alice" in listed.output

    missing = runner.invoke(ALERTS, ["ack", "999999", "--by", "alice"])
    assert missing.exit_code == 1 and "no alert 999999" in missing.output


def test_missing_dsn_is_a_usage_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    load_settings.cache_clear()
    env = {"WAFERSTREAM_POSTGRES__URL": "", "WAFERSTREAM_DATA_DIR": str(tmp_path)}
    result = CliRunner(env=env).invoke(ALERTS, ["list"])
    load_settings.cache_clear()
    assert result.exit_code == 2 and "WAFERSTREAM_POSTGRES__URL" in result.output


def test_metrics_module_can_be_reloaded_without_duplicate_registration() -> None:
    before = metrics.ALERTS_SENT
    reloaded = importlib.reload(metrics)
    assert reloaded.ALERTS_SENT is before
