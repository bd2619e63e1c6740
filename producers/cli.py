"""``waferstream publish | replay | backfill``: the producer side of the command line.

Commands take their :class:`Settings` from ``click``'s context object when one
is given (tests, embedding) and from :func:`infra.settings.load_settings`
otherwise. Exit codes: 0 done, 1 some input could not be published, 75
(EX_TEMPFAIL) events are safely spooled but the broker did not take them yet.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import click

from infra.settings import Settings, load_settings

EX_TEMPFAIL: Final = 75


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Settings) else load_settings()


def _dry_run(files: tuple[Path, ...], as_json: bool) -> int:
    from producers.formats import WaferFileError, read_wafers
    from producers.publisher import wafer_summary

    results: list[dict[str, Any]] = []
    for path in files:
        try:
            results.append({"file": str(path), "wafers": [wafer_summary(w) for w in read_wafers(path)]})
        except WaferFileError as exc:
            results.append({"file": str(path), "error": f"{type(exc).__name__}: {exc}"})
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for result in results:
            click.echo(f"{result['file']}: {result.get('error', '')}")
            for w in result.get("wafers", []):
                click.echo(
                    f"  lot={w['lot_id']} wafer={w['wafer_id']} product={w['product']} "
                    f"tester={w['tester']} grid={w['grid'][0]}x{w['grid'][1]} dies={w['dies']} "
                    f"pass={w['pass']} fail={w['fail']} bins={len(w['bins'])}"
                )
    return 1 if any("error" in r for r in results) else 0


@click.command("publish")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--watch", "watch_dir", type=click.Path(file_okay=False, path_type=Path),
              help="ATE drop folder to watch instead of FILES (finished files only).")
@click.option("--dry-run", is_flag=True, help="Parse and summarise; archive and publish nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print JSON.")
@click.option("--settle", default=5.0, show_default=True,
              help="--watch: seconds a file must be unchanged before it is read.")
@click.option("--poll", default=2.0, show_default=True, help="--watch: seconds between scans.")
@click.option("--drain-timeout", default=60.0, show_default=True,
              help="FILES: seconds to keep retrying delivery before leaving events in the spool.")
@click.pass_context
def publish(
    ctx: click.Context,
    files: tuple[Path, ...],
    watch_dir: Path | None,
    dry_run: bool,
    as_json: bool,
    settle: float,
    poll: float,
    drain_timeout: float,
) -> None:
    """Publish ATE wafer files (STDF, SEMI E142/G85, npy/npz/csv) as wafer-complete events."""
    if bool(files) == bool(watch_dir):
        raise click.UsageError("give FILES or --watch DIR (not both)")
    if dry_run:
        if watch_dir:
            raise click.UsageError("--dry-run works on FILES only")
        ctx.exit(_dry_run(files, as_json))
    from producers.formats import WaferFileError
    from producers.publisher import Publisher
    from producers.watcher import DropFolderWatcher

    publisher = Publisher(_settings(ctx))
    try:
        if watch_dir:
            watcher = DropFolderWatcher(publisher, watch_dir, settle_s=settle)
            watcher.install_signal_handlers()
            watcher.run(poll)
            ctx.exit(0 if publisher.drain(min(drain_timeout, 10.0)) else EX_TEMPFAIL)
        failed = 0
        for path in files:
            try:
                spooled = publisher.spool_file(path)
                click.echo(f"{path}: {len(spooled.event_ids)} wafers ({spooled.newly_spooled} new)")
            except WaferFileError as exc:
                failed += 1
                click.echo(f"{path}: {type(exc).__name__}: {exc}", err=True)
        if not publisher.drain(drain_timeout):
            click.echo(f"{publisher.spool.backlog()} events spooled; the broker did not take them yet. "
                       "They are sent by the next publish or watcher run.", err=True)
            ctx.exit(EX_TEMPFAIL)
        ctx.exit(1 if failed else 0)
    finally:
        publisher.close()


@click.command("replay")
@click.option("--topic", required=True, help="Catalog topic name (without the topic prefix).")
@click.option("--from", "start", required=True, help="First offset, or ISO time (inclusive).")
@click.option("--to", "end", required=True, help="End offset, or ISO time (exclusive).")
@click.option("--partitions", default=None, help="Comma-separated partitions (default: all).")
@click.option("--idle", default=2.0, show_default=True,
              help="Seconds without a record after which a partition's range is complete.")
@click.pass_context
def replay_command(
    ctx: click.Context, topic: str, start: str, end: str, partitions: str | None, idle: float
) -> None:
    """Copy a range of TOPIC to its replay lane (wafer.test.completed -> .backfill)."""
    from producers.replay import Bound, replay

    try:
        bounds = Bound.parse(start), Bound.parse(end)
    except ValueError as exc:
        raise click.BadParameter(f"not an offset or ISO-8601 time: {exc}") from exc
    chosen = [int(p) for p in partitions.split(",")] if partitions else None
    report = replay(_settings(ctx), topic, *bounds, chosen, idle_s=idle)
    click.echo(json.dumps({"source": report.source, "target": report.target, "copied": report.copied,
                           "partitions": [asdict(p) for p in report.partitions]}, indent=2))


@click.command("backfill")
@click.option("--from-archive", is_flag=True,
              help="Re-publish archived source files (the only source; use `replay` for topics).")
@click.option("--model", required=True, help="Model version the backfill asks for.")
@click.option("--since", default=None, help="Wafers tested at/after this ISO time.")
@click.option("--until", default=None, help="Wafers tested before this ISO time.")
@click.option("--lot", "lots", multiple=True, help="Only these lots (repeatable).")
@click.option("--product", "products", multiple=True, help="Only these products (repeatable).")
@click.option("--rate", default=0.0, show_default=True, help="Max events per second; 0 = unlimited.")
@click.option("--limit", type=int, default=None, help="Process at most this many files this run.")
@click.pass_context
def backfill_command(
    ctx: click.Context,
    from_archive: bool,
    model: str,
    since: str | None,
    until: str | None,
    lots: tuple[str, ...],
    products: tuple[str, ...],
    rate: float,
    limit: int | None,
) -> None:
    """Re-run archived wafers with --model on the backfill lane (resumable)."""
    from producers.backfill import parse_filter, run_backfill

    if not from_archive:
        raise click.UsageError("--from-archive is required")
    report = run_backfill(
        _settings(ctx), model, parse_filter(since, until, lots, products), rate=rate, limit=limit
    )
    click.echo(json.dumps(asdict(report), indent=2))
    ctx.exit(1 if report.failed else 0)


PRODUCER_COMMANDS: Final[list[click.Command]] = [publish, replay_command, backfill_command]
