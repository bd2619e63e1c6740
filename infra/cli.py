"""The ``waferstream`` command: one entry point, a subcommand per job.

Heavy imports (torch, onnxruntime, the services) happen inside the commands
that need them, so ``waferstream config`` or ``stack status`` start instantly.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from infra.settings import Settings, load_settings


def _settings() -> Settings:
    return load_settings()


@click.group()
def main() -> None:
    """waferstream: wafer-test completions in, defect analyses out."""
    from infra.logging import configure_logging

    configure_logging(_settings().observability)


@main.command()
@click.option("--reference", is_flag=True, help="print the Markdown reference of every variable")
def config(reference: bool) -> None:
    """Print the effective configuration (secrets masked) as JSON."""
    if reference:
        from infra.settings import reference_markdown

        click.echo(reference_markdown(), nl=False)
        return
    click.echo(json.dumps(_settings().masked(), indent=2, default=str))


# -- embedded stack ------------------------------------------------------------


@main.group()
def stack() -> None:
    """Start/stop the embedded broker, PostgreSQL, Redis and object store."""


@stack.command("up")
def stack_up() -> None:
    """Start every component that is not configured; print their addresses."""
    from infra.stack.manager import Stack
    from infra.stack.processes import PortInUse

    try:
        state = Stack(Settings()).up()
    except PortInUse as exc:
        raise click.ClickException(str(exc)) from exc
    load_settings.cache_clear()
    click.echo(json.dumps(state, indent=2))


@stack.command("down")
def stack_down() -> None:
    """Stop the embedded components."""
    from infra.stack.manager import Stack

    click.echo(json.dumps({"stopped": Stack(Settings()).down()}))


@stack.command("status")
def stack_status() -> None:
    """Health of each component; exit code 1 if an embedded one is unhealthy."""
    from infra.stack.manager import Stack

    statuses = Stack(Settings()).status()
    for s in statuses:
        health = {True: "healthy", False: "DOWN", None: "-"}[s.healthy]
        click.echo(f"{s.name:9} {health:8} {s.address}")
    if any(s.embedded and not s.healthy for s in statuses):
        sys.exit(1)


# -- topics, database, schemas ---------------------------------------------------


@main.group()
def topics() -> None:
    """The topic catalog."""


@topics.command("ensure")
def topics_ensure() -> None:
    """Create missing topics and verify existing ones against the catalog."""
    from infra.kafka.admin import ensure_topics

    statuses = ensure_topics(_settings())
    for s in statuses:
        click.echo(f"{s.action:9} {s.name} {s.detail}")
    if any(s.action == "mismatch" for s in statuses):
        sys.exit(1)


@topics.command("list")
def topics_list() -> None:
    """Print the catalog: name, partitions, retention, cleanup, key and why."""
    from schemas.topics import ALL_TOPICS

    for t in ALL_TOPICS:
        click.echo(
            f"{t.name:34} p={t.partitions:<2} retention={t.retention_ms // 86_400_000}d "
            f"{t.cleanup_policy:14} key={t.key:10} {t.why}"
        )


@main.group()
def db() -> None:
    """PostgreSQL schema management."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (idempotent, under an advisory lock)."""
    import asyncpg

    from infra.db.migrate import migrate

    async def _run() -> list[str]:
        conn = await asyncpg.connect(_settings().postgres.url.get_secret_value())
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    applied = asyncio.run(_run())
    click.echo(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


@main.group()
def schemas() -> None:
    """Avro contract checks."""


@schemas.command("check")
def schemas_check() -> None:
    """Fail (exit 1) if a schema change is not backward compatible with a released version."""
    from schemas.compat import check

    problems = check()
    for name, issues in problems.items():
        for issue in issues:
            click.echo(f"INCOMPATIBLE {name} {issue}", err=True)
    if problems:
        sys.exit(1)
    click.echo("all schemas backward compatible with their released versions")


@schemas.command("lock")
def schemas_lock() -> None:
    """Record the current schemas as released versions (after `check` passes)."""
    from schemas.compat import lock

    added = lock()
    click.echo("locked: " + (", ".join(added) or "nothing new"))


# -- services ------------------------------------------------------------------------


@main.group()
def run() -> None:
    """Run a long-lived service until SIGTERM/SIGINT."""


@run.command("inference")
@click.option("--lane", type=click.Choice(["live", "backfill"]), default="live")
def run_inference_cmd(lane: str) -> None:
    """Inference worker: wafer-complete events -> segmentation -> PostgreSQL + events."""
    from consumers.inference.main import run_inference

    asyncio.run(run_inference(_settings(), lane.upper()))


@run.command("severity")
def run_severity_cmd() -> None:
    """Severity processor: wafer-segmented -> assessments, lot state, lot excursions."""
    from consumers.severity.main import run_severity

    asyncio.run(run_severity(_settings()))


@run.command("alerts")
def run_alerts_cmd() -> None:
    """Alert notifier: assessed wafers and lot excursions -> FA engineers."""
    from consumers.alerts.main import run_alerts

    asyncio.run(run_alerts(_settings()))


@main.command()
@click.option("--wafers", type=int, default=100, show_default=True)
@click.option("--rate", type=float, default=0.0, help="wafers per second (0 = as fast as possible)")
@click.option("--duration", type=float, default=0.0, help="seconds; with --rate sets --wafers")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--truth", type=click.Path(path_type=Path), help="append ground truth (JSONL) here")
def simulate(wafers: int, rate: float, duration: float, seed: int, truth: Path | None) -> None:
    """Publish realistic simulated wafer-complete traffic."""
    from infra.kafka.producer import EventProducer
    from producers.simulator import SimulationConfig, publish_simulation
    from schemas.topics import WAFER_TEST_COMPLETED

    if rate > 0 and duration > 0:
        wafers = int(rate * duration)
    settings = _settings()
    producer = EventProducer(settings)
    published = publish_simulation(
        producer, SimulationConfig(seed=seed, wafers=wafers), WAFER_TEST_COMPLETED, rate, truth
    )
    click.echo(f"published {len(published)} wafer-complete events")


@main.command()
@click.option("--wafers", type=int, default=50, show_default=True)
@click.option("--timeout", type=float, default=120.0, show_default=True)
def demo(wafers: int, timeout: float) -> None:
    """Start the embedded stack and the pipeline, publish wafers, show what happened."""
    from infra.demo import run_demo

    ok = run_demo(wafers, timeout)
    sys.exit(0 if ok else 1)


@main.group()
def bench() -> None:
    """Benchmarks that print their figures (never timed assertions)."""


@bench.command("pipeline")
@click.option("--wafers", type=int, default=500, show_default=True)
@click.option("--max-side", type=int, default=64, show_default=True, help="largest map side")
@click.option("--json", "out", type=click.Path(path_type=Path), help="write the figures here")
@click.option("--inference-processes", type=click.IntRange(min=1),
              help="inference workers  [default: one per core, up to the partition count]")
def bench_pipeline(
    wafers: int, max_side: int, out: Path | None, inference_processes: int | None
) -> None:
    """End-to-end throughput and latency vs. raw onnxruntime on the same maps."""
    from dataclasses import asdict

    from infra.bench.pipeline import run_bench

    result = run_bench(wafers, max_side, out, inference_processes)
    click.echo(json.dumps(asdict(result), indent=2))


def _register_optional() -> None:
    """Commands owned by other packages (model, alerts, producers)."""
    from consumers.alerts.cli import ALERT_COMMANDS
    from ml.cli import ML_COMMANDS
    from producers.cli import PRODUCER_COMMANDS

    for command in [*ML_COMMANDS, *ALERT_COMMANDS, *PRODUCER_COMMANDS]:
        main.add_command(command)


_register_optional()
