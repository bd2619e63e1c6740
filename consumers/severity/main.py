"""Entry point of ``waferstream run severity``."""

from __future__ import annotations

import asyncio
import signal
import threading

import structlog

from consumers.severity.config import SeveritySettings
from consumers.severity.processor import SeverityProcessor, with_retry
from infra.db.pool import create_pool
from infra.kafka.admin import ensure_topics
from infra.settings import Settings
from schemas.topics import LOT_EXCURSIONS, WAFER_ASSESSED, WAFER_SEGMENTED, dead_letter_topic

log = structlog.get_logger(__name__)

TOPICS = (WAFER_SEGMENTED, dead_letter_topic(WAFER_SEGMENTED), WAFER_ASSESSED, LOT_EXCURSIONS)


async def run_severity(
    settings: Settings,
    stop: asyncio.Event | None = None,
    config: SeveritySettings | None = None,
) -> None:
    """Serve the severity processor until ``stop`` is set (or SIGTERM/SIGINT in the main thread).

    Topics are created first with their catalog partition counts (a broker that
    auto-creates would pick its own) and a mismatch refuses to start; the faust
    app then creates its changelog with the input topic's partition count.
    """
    stop = stop or asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    statuses = await asyncio.to_thread(ensure_topics, settings, TOPICS)
    mismatched = [s for s in statuses if s.action == "mismatch"]
    if mismatched:  # the lot table needs the catalog's partitioning to be co-partitioned
        raise RuntimeError(f"topics differ from the catalog: {mismatched}")
    pool = await with_retry("postgres", settings.retry, lambda: create_pool(settings.postgres))
    try:
        processor = SeverityProcessor(settings, pool, config)
        await processor.app.start()
        log.info("severity processor started", group=processor.group)
        try:
            await stop.wait()
        finally:
            await processor.app.stop()
    finally:
        await pool.close()
