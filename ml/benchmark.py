"""Latency measurement of an ONNX wafer model (torch-free), shared by the benchmark
script and the INT8 ship decision, so both time the same thing the same way."""

from __future__ import annotations

import time

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


def compare(
    a: WaferModel, b: WaferModel, maps: list[np.ndarray], batch: int = 8, rounds: int = 5
) -> tuple[float, float]:
    """Median over ``rounds`` of per-wafer mean latency for ``a`` and ``b``, interleaved.

    Interleaving (a, b, a, b, ...) exposes both models to the same load
    drift on a shared machine, which sequential timing does not.
    """
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(bench_session(a, maps, batch)["mean_ms"])
        tb.append(bench_session(b, maps, batch)["mean_ms"])
    return float(np.median(ta)), float(np.median(tb))
