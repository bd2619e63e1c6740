"""Latency measurement of an ONNX wafer model (torch-free), shared by the benchmark
script and the ship step's INT8 and test-time-view decisions, so all of them
time the same thing the same way."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ml.buckets import encode, place, to_bucket
from ml.serving import WaferModel


def latency_stats(ms: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 / mean of latencies in milliseconds (every benchmark reports these)."""
    a = np.array(ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def bench_session(model: WaferModel, maps: list[np.ndarray], batch: int) -> dict[str, float]:
    """Per-wafer latency of the model's forward pass at ``batch`` (one bucket, inputs prebuilt).

    The forward pass is what serving runs per batch: the ONNX main graph,
    over as many test-time views as the model's card asks for.

    Fewer maps than one batch are repeated to fill it (a small calibration
    split must still give a figure).
    """
    if not maps:
        raise ValueError("no maps to time")
    xs = [to_bucket(encode(m, model.channels), place(m.shape)) for m in maps]
    xs = xs * -(-batch // len(xs))
    batches = [np.stack(xs[i : i + batch]) for i in range(0, len(xs) - batch + 1, batch)]
    for b in batches[:3]:
        model.forward(b)
    times = []
    for b in batches:
        t0 = time.perf_counter()
        model.forward(b)
        times.append(1000 * (time.perf_counter() - t0) / batch)
    return {**latency_stats(times), "wafers_per_s": round(1000 / float(np.mean(times)), 1)}


def interleaved_ms(
    models: Sequence[WaferModel], maps: list[np.ndarray], batch: int = 8, rounds: int = 5
) -> list[float]:
    """Median over ``rounds`` of per-wafer mean latency for each model, interleaved.

    Interleaving (a, b, a, b, ...) exposes every model to the same load
    drift on a shared machine, which sequential timing does not.
    """
    times: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for model, t in zip(models, times, strict=True):
            t.append(bench_session(model, maps, batch)["mean_ms"])
    return [float(np.median(t)) for t in times]


def compare(
    a: WaferModel, b: WaferModel, maps: list[np.ndarray], batch: int = 8, rounds: int = 5
) -> tuple[float, float]:
    """``interleaved_ms`` of two models."""
    ta, tb = interleaved_ms([a, b], maps, batch, rounds)
    return ta, tb
