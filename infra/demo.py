"""``waferstream demo``: the whole loop on the embedded stack, in one command.

Starts the local pipeline (embedded stack, topics, migrations, every service
as its own process, a local webhook inbox for alerts), publishes simulated
wafers with known patterns, waits until every wafer is assessed in
PostgreSQL, then prints what the pipeline found next to the ground truth and
the alerts the "FA team" received.
"""

from __future__ import annotations

import time
from collections import Counter

import click

from infra.kafka.producer import EventProducer
from infra.local_pipeline import LocalPipeline
from producers.simulator import SimulatedWafer, SimulationConfig, publish_simulation
from schemas.topics import WAFER_TEST_COMPLETED

DONE = "SELECT count(*) FROM assessments WHERE source_event_id = ANY($1::text[])"


def run_demo(wafers: int, timeout_s: float) -> bool:
    """Run the demo; True if every published wafer was assessed in time."""
    click.echo("1/4 starting the embedded stack and the pipeline services ...")
    with LocalPipeline(tag="demo") as pipe:
        settings = pipe.settings
        click.echo(f"2/4 publishing {wafers} simulated wafers (ground truth in "
                   f"{settings.data_dir}/demo-truth.jsonl) ...")
        started = time.monotonic()
        published = publish_simulation(
            EventProducer(settings),
            SimulationConfig(seed=int(time.time()) % 10_000, wafers=wafers, excursion_every_lots=1),
            WAFER_TEST_COMPLETED, truth_file=settings.data_dir / "demo-truth.jsonl",
        )
        ids = [w.event["event_id"] for w in published]
        click.echo("3/4 waiting until every wafer is assessed in PostgreSQL ...")
        try:
            pipe.wait_for(DONE, len(ids), timeout_s, ids)
        except TimeoutError:
            done = pipe.count(DONE, ids)
            click.echo(f"only {done}/{len(ids)} wafers assessed within {timeout_s:.0f}s "
                       f"(logs in {settings.data_dir})", err=True)
            return False
        elapsed = time.monotonic() - started
        time.sleep(2.0)  # the notifier decides right after the assessment
        click.echo("4/4 results\n")
        _report(pipe, published)
        click.echo(f"\nalerts received by the FA inbox: {pipe.inbox.count} "
                   f"({pipe.inbox.path})")
        click.echo(
            f"all {len(ids)} wafers processed end to end in {elapsed:.1f}s "
            f"({len(ids) / elapsed:.1f} wafers/s). The stack keeps running: "
            "`waferstream stack status`, `waferstream alerts list`, `waferstream stack down`."
        )
        return True


def _report(pipe: LocalPipeline, published: list[SimulatedWafer]) -> None:
    rows = pipe.fetch(
        "SELECT a.wafer_id, a.failing_dies, a.total_dies, a.dominant_pattern, "
        "a.cluster_count, a.severity_score, a.severity_level, a.model_version "
        "FROM assessments a WHERE a.source_event_id = ANY($1::text[]) "
        "ORDER BY a.lot_id, a.wafer_id",
        [w.event["event_id"] for w in published],
    )
    excursions = pipe.fetch("SELECT lot_id, cause, pattern, detail FROM lot_excursions")
    truth = {w.event["wafer_id"]: w.patterns for w in published}
    click.echo(f"{'wafer':16} {'fail/total':>11} {'dominant':10} {'clusters':>8} "
               f"{'severity':>14}  truth")
    for row in rows[:20]:
        click.echo(
            f"{row['wafer_id']:16} {row['failing_dies']:>5}/{row['total_dies']:<5} "
            f"{row['dominant_pattern']:10} {row['cluster_count']:>8} "
            f"{row['severity_score']:>5.1f} {row['severity_level']:>8}  "
            f"{', '.join(truth[row['wafer_id']]) or 'none'}"
        )
    if len(rows) > 20:
        click.echo(f"... {len(rows) - 20} more")
    levels = Counter(r["severity_level"] for r in rows)
    click.echo(f"\nseverity levels: {dict(levels)}; model: "
               f"{rows[0]['model_version'] if rows else '-'}")
    for exc in excursions:
        click.echo(f"lot excursion: {exc['lot_id']} {exc['cause']} {exc['pattern']}: "
                   f"{exc['detail']}")
