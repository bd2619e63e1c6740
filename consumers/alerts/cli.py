"""``waferstream alerts list|ack``: what FA engineers use to see and claim alerts.

Exposed as :data:`ALERT_COMMANDS` so the main CLI can mount the group without
this package knowing about it. The DSN comes from the central settings
(``WAFERSTREAM_POSTGRES__URL``, or the running embedded stack).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import asyncpg
import click

from infra.settings import load_settings
from consumers.alerts.store import STATUSES, AlertRow, AlertStatus, AlertStore

_T = TypeVar("_T")


def _run(action: Callable[[AlertStore], Awaitable[_T]]) -> _T:
    """Run one store call on a short-lived pool (a CLI call is one round trip)."""
    dsn = load_settings().postgres.url.get_secret_value()
    if not dsn:
        raise click.UsageError(
            "no PostgreSQL configured: set WAFERSTREAM_POSTGRES__URL or run `waferstream stack up`"
        )

    async def main() -> _T:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        try:
            return await action(AlertStore(pool))
        finally:
            await pool.close()

    return asyncio.run(main())


def _line(row: AlertRow) -> str:
    where = f"{row.lot_id}/{row.wafer_id or '-'}"
    acked = f"acked by {row.acked_by}" if row.acked_by else "unacked"
    return (
        f"{row.id:>6}  {row.created_at:%Y-%m-%d %H:%M:%S}  {row.status:<10} {row.severity:<8} "
        f"{where:<20} {row.rule} -> {row.channel}:{row.recipient}  {acked}"
    )


@click.group("alerts")
def alerts() -> None:
    """Inspect and acknowledge wafer alerts."""


@alerts.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="only alerts in this state")
@click.option("--lot", "lot_id", help="only alerts of this lot")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def list_alerts(status: str | None, lot_id: str | None, limit: int, as_json: bool) -> None:
    """List alerts, newest first."""
    wanted = cast("AlertStatus | None", status)  # click.Choice already restricted it
    rows = _run(lambda store: store.query(status=wanted, lot_id=lot_id, limit=limit))
    for row in rows:
        click.echo(row.model_dump_json() if as_json else _line(row))


@alerts.command("ack")
@click.argument("alert_id", type=int)
@click.option("--by", "by", required=True, help="who takes the alert (name or login)")
def ack(alert_id: int, by: str) -> None:
    """Acknowledge ALERT_ID; an alert keeps its first acknowledgement."""
    row = _run(lambda store: store.ack(alert_id, by))
    if row is None:
        raise click.ClickException(f"no alert {alert_id}")
    if row.acked_by != by:
        click.echo(f"alert {alert_id} was already acknowledged by {row.acked_by} at {row.acked_at}")
    else:
        click.echo(f"alert {alert_id} acknowledged by {by}")


#: Commands for the top-level ``waferstream`` CLI to add.
ALERT_COMMANDS: list[click.Command] = [alerts]
