"""Entry point of ``waferstream run inference``."""

from __future__ import annotations

import asyncio

from consumers.inference.models import LifecycleWatcher, ModelRegistry
from consumers.inference.worker import InferenceWorker
from infra.runtime import run_loop, service_resources
from infra.settings import Settings
from ml.serving import DEFAULT_MODEL_PATH, WaferModel


async def run_inference(
    settings: Settings, lane: str = "LIVE", stop: asyncio.Event | None = None
) -> None:
    """Serve the inference worker on the live or backfill lane until stopped.

    Starts on the configured model, then applies every model-lifecycle event
    already on the topic (so a restarted worker serves the latest promotion),
    then keeps following the topic for hot swaps.
    """
    model_path = settings.model.path or DEFAULT_MODEL_PATH
    threads = settings.model.intra_op_threads
    model = await asyncio.to_thread(WaferModel.load, model_path, threads)
    async with service_resources(settings, f"inference-{lane.lower()}") as res:
        registry = ModelRegistry(model, settings.data_dir / "models", res.store, threads)
        watcher = LifecycleWatcher(settings, registry, res.producer.codec)
        await asyncio.to_thread(watcher.catch_up)
        watcher.start()
        try:
            worker = InferenceWorker(settings, registry, res.pool, res.store, res.producer,
                                     res.producer.codec)
            await run_loop(res, worker.service(lane), stop)
        finally:
            await asyncio.to_thread(watcher.stop)
