"""Opening and closing a service's clients in one place.

Every long-running service needs the same things: logging, a metrics
endpoint, a database pool, an object store, a producer and a consumer loop
wired to SIGTERM. :class:`ServiceResources` opens them with dependency
outages retried (a service started before its database waits for it instead
of crash-looping) and closes them in reverse order, flushing the producer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import structlog

from infra.db.pool import create_pool
from infra.errors import DependencyUnavailable
from infra.kafka.consumer import ConsumerLoop, ConsumerService
from infra.kafka.producer import EventProducer
from infra.logging import configure_logging
from infra.metrics import start_metrics_server
from infra.objectstore import ObjectStore, open_object_store
from infra.settings import Settings

log = structlog.get_logger(__name__)


@dataclass
class ServiceResources:
    settings: Settings
    pool: asyncpg.Pool
    store: ObjectStore
    producer: EventProducer


async def _with_retry(what: str, settings: Settings, factory):  # type: ignore[no-untyped-def]
    delay = settings.retry.initial_s
    while True:
        try:
            return await factory()
        except DependencyUnavailable as exc:
            log.warning("waiting for dependency", dependency=what, error=str(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(settings.retry.max_s, delay * settings.retry.multiplier)


@asynccontextmanager
async def service_resources(settings: Settings, name: str) -> AsyncIterator[ServiceResources]:
    """Logging, metrics, pool, object store and producer for service ``name``."""
    configure_logging(settings.observability)
    port = start_metrics_server(settings.observability.metrics_port)
    log.info("service starting", service=name, metrics_port=port or None)
    pool = await _with_retry("postgres", settings, lambda: create_pool(settings.postgres))
    store = await _with_retry(
        "object_store", settings, lambda: asyncio.to_thread(open_object_store, settings)
    )
    producer = EventProducer(settings)
    try:
        yield ServiceResources(settings, pool, store, producer)
    finally:
        try:
            await asyncio.to_thread(producer.close)
        finally:
            await pool.close()


async def run_loop(
    resources: ServiceResources,
    service: ConsumerService,  # type: ignore[type-arg]
    stop: asyncio.Event | None = None,
) -> ConsumerLoop:  # type: ignore[type-arg]
    """Run one consumer loop until SIGTERM/SIGINT (main thread) or ``stop`` is set."""
    loop = ConsumerLoop(resources.settings, service, resources.producer)
    if threading.current_thread() is threading.main_thread():
        loop.install_signal_handlers()
    watcher = asyncio.create_task(_stop_when_set(stop, loop)) if stop is not None else None
    try:
        await loop.run()
    finally:
        if watcher is not None:
            watcher.cancel()
    return loop


async def _stop_when_set(stop: asyncio.Event, loop: ConsumerLoop) -> None:  # type: ignore[type-arg]
    await stop.wait()
    loop.stop()
