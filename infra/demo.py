"""``waferstream demo``: the whole loop on the embedded stack, in one command.

Starts the stack, creates topics, migrates the database, launches the
pipeline services as real subprocesses (what an operator would run),
publishes simulated wafers with known patterns and waits until every wafer's
result is in PostgreSQL, then prints what the pipeline found next to the
ground truth.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import asyncpg
import click

from infra.db.migrate import migrate
from infra.kafka.admin import ensure_topics
from infra.kafka.producer import EventProducer
from infra.settings import Settings
from infra.stack.manager import Stack
from producers.simulator import SimulationConfig, publish_simulation
from schemas.topics import WAFER_TEST_COMPLETED

SERVICES: tuple[tuple[str, ...], ...] = (("run", "inference"),)


def run_demo(wafers: int, timeout_s: float) -> bool:
    """Run the demo; True if every published wafer was processed in time."""
    base = Settings()
    click.echo("1/5 starting the embedded stack ...")
    Stack(base).up()
    settings = Settings().with_embedded()
    click.echo("2/5 creating topics and migrating the database ...")
    ensure_topics(settings)
    asyncio.run(_migrate(settings))
    click.echo("3/5 starting pipeline services: " + ", ".join(" ".join(s) for s in SERVICES))
    procs = [_spawn(settings, args) for args in SERVICES]
    try:
        click.echo(f"4/5 publishing {wafers} simulated wafers ...")
        truth_file = settings.data_dir / "demo-truth.jsonl"
        started = time.monotonic()
        published = publish_simulation(
            EventProducer(settings), SimulationConfig(seed=int(time.time()) % 10_000, wafers=wafers),
            WAFER_TEST_COMPLETED, truth_file=truth_file,
        )
        ids = [w.event["event_id"] for w in published]
        click.echo("5/5 waiting for results in PostgreSQL ...")
        done = asyncio.run(_wait_for_results(settings, ids, timeout_s, procs))
        elapsed = time.monotonic() - started
        asyncio.run(_report(settings, published, elapsed))
        if done < len(ids):
            click.echo(f"only {done}/{len(ids)} wafers processed within {timeout_s:.0f}s", err=True)
            return False
        click.echo(
            f"\nall {len(ids)} wafers processed end to end in {elapsed:.1f}s. "
            "The stack keeps running: `waferstream stack status`, `waferstream stack down`."
        )
        return True
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _migrate(settings: Settings) -> None:
    conn = await asyncpg.connect(settings.postgres.url.get_secret_value())
    try:
        await migrate(conn)
    finally:
        await conn.close()


def _spawn(settings: Settings, args: tuple[str, ...]) -> subprocess.Popen[bytes]:
    log_path = settings.data_dir / f"{'-'.join(args)}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child process
    env = {**os.environ, "WAFERSTREAM_OBSERVABILITY__LOG_FORMAT": "json"}
    return subprocess.Popen(
        [sys.executable, "-m", "infra", *args], stdout=log, stderr=subprocess.STDOUT, env=env
    )


async def _wait_for_results(
    settings: Settings, ids: list[str], timeout_s: float, procs: list[subprocess.Popen[bytes]]
) -> int:
    conn = await asyncpg.connect(settings.postgres.url.get_secret_value())
    try:
        deadline = time.monotonic() + timeout_s
        done = 0
        while time.monotonic() < deadline:
            done = await conn.fetchval(
                "SELECT count(DISTINCT source_event_id) FROM inference_results "
                "WHERE source_event_id = ANY($1::text[])",
                ids,
            )
            if done >= len(ids):
                break
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                click.echo(f"a service exited early (see {settings.data_dir}/*.log)", err=True)
                break
            await asyncio.sleep(0.5)
        return int(done)
    finally:
        await conn.close()


async def _report(settings: Settings, published: list, elapsed: float) -> None:  # type: ignore[type-arg]
    conn = await asyncpg.connect(settings.postgres.url.get_secret_value())
    try:
        rows = await conn.fetch(
            "SELECT w.lot_id, w.wafer_id, w.failing_dies, w.total_dies, r.label, r.patterns, "
            "r.model_version, (SELECT count(*) FROM clusters c WHERE c.source_event_id = "
            "r.source_event_id AND c.model_version = r.model_version) AS clusters "
            "FROM inference_results r JOIN wafers w ON w.event_id = r.source_event_id "
            "WHERE r.source_event_id = ANY($1::text[]) ORDER BY w.lot_id, w.wafer_id",
            [w.event["event_id"] for w in published],
        )
    finally:
        await conn.close()
    truth = {w.event["wafer_id"]: w.patterns for w in published}
    click.echo(f"\n{'wafer':16} {'fail/total':>11} {'model says':12} {'clusters':>8}  truth")
    for row in rows[:15]:
        click.echo(
            f"{row['wafer_id']:16} {row['failing_dies']:>5}/{row['total_dies']:<5} "
            f"{row['label']:12} {row['clusters']:>8}  {', '.join(truth[row['wafer_id']]) or 'none'}"
        )
    if len(rows) > 15:
        click.echo(f"... {len(rows) - 15} more")
    labels = Counter(r["label"] for r in rows)
    click.echo(f"\nlabels: {dict(labels)}; model: {rows[0]['model_version'] if rows else '-'}")
    click.echo(f"throughput: {len(rows) / max(elapsed, 1e-6):.1f} wafers/s (publish -> PostgreSQL)")
    click.echo(f"results: {Path(settings.data_dir).resolve()}/ (logs, objects, demo-truth.jsonl)")
