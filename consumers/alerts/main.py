"""Entry point of ``waferstream run alerts``."""

from __future__ import annotations

import asyncio

from consumers.alerts.notifier import Notifier
from consumers.alerts.rules import load_config
from consumers.alerts.service import AlertService, dead_letter_to_topic, flush_digests_forever
from infra.redis_client import create_redis
from infra.runtime import run_loop, service_resources
from infra.settings import Settings


async def run_alerts(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve the alert notifier until stopped."""
    if not settings.alerts.rules_file:
        raise SystemExit("set WAFERSTREAM_ALERTS__RULES_FILE (see docs/alerts.md)")
    config = load_config(settings.alerts.rules_file)
    stop = stop or asyncio.Event()
    async with service_resources(settings, "alerts") as res:
        redis = create_redis(settings.redis)
        try:
            async with Notifier(
                config, res.pool, redis,
                dead_letter=dead_letter_to_topic(settings, res.producer),
                key_prefix=f"{settings.topic_prefix}waferstream:alerts",
            ) as notifier:
                service = AlertService(settings, notifier, res.producer, res.producer.codec,
                                       res.store)
                flusher = asyncio.create_task(flush_digests_forever(
                    notifier.flush_digests, settings.alerts.digest_flush_interval_s, stop))
                try:
                    await run_loop(res, service.service(), stop)
                finally:
                    stop.set()
                    await flusher
        finally:
            await redis.aclose()
