"""Entry point of ``waferstream run inference``."""

from __future__ import annotations

import asyncio

from consumers.inference.worker import InferenceWorker
from infra.runtime import run_loop, service_resources
from infra.settings import Settings
from ml.serving import DEFAULT_MODEL_PATH, WaferModel


async def run_inference(
    settings: Settings, lane: str = "LIVE", stop: asyncio.Event | None = None
) -> None:
    """Serve the inference worker on the live or backfill lane until stopped."""
    model_path = settings.model.path or DEFAULT_MODEL_PATH
    model = await asyncio.to_thread(
        WaferModel.load, model_path, settings.model.intra_op_threads
    )
    async with service_resources(settings, f"inference-{lane.lower()}") as res:
        worker = InferenceWorker(settings, model, res.pool, res.store, res.producer,
                                 res.producer.codec)
        await run_loop(res, worker.service(lane), stop)
