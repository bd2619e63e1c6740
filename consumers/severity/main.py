"""Entry point of ``waferstream run severity``."""

from __future__ import annotations

import asyncio

from consumers.severity.processor import SeverityProcessor
from infra.runtime import run_loop, service_resources
from infra.settings import Settings


async def run_severity(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve the severity processor until stopped (SIGTERM/SIGINT or ``stop``)."""
    async with service_resources(settings, "severity") as res:
        processor = SeverityProcessor(settings, res.pool, res.producer, res.producer.codec)
        await run_loop(res, processor.service(), stop)
