"""Benchmark the shipped wafer model with onnxruntime; prints figures, asserts nothing.

Why a script and not a test: latency depends on the machine and its load;
the bar (<= 10 ms per wafer at batch 8 for maps <= 64x64) is checked by
reading these figures, next to a baseline measured in the same run
(batch 1, and the FP32 graph when an INT8 graph is benchmarked), so ratios
stay meaningful on a noisy shared machine.

    python scripts/bench_model.py [--model ml/models/model.onnx] [--other PATH] [--n 400]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ml.benchmark import bench_session, compare
from ml.data import DEFAULT_DATA_DIR, TEST_FILE, load_npz
from ml.serving import DEFAULT_MODEL_PATH, WaferModel


def _real_maps(n: int, max_side: int, min_side: int = 0) -> list[np.ndarray]:
    ws = load_npz(DEFAULT_DATA_DIR / TEST_FILE)
    return [m for m in ws.maps if min_side < max(m.shape) <= max_side][:n]


def bench_predict(model: WaferModel, maps: list[np.ndarray]) -> dict[str, float]:
    """End-to-end ``WaferModel.predict`` throughput (bucketing, softmax, die mapping)."""
    model.predict(maps[:16])
    t0 = time.perf_counter()
    model.predict(maps)
    dt = time.perf_counter() - t0
    return {"wafers_per_s": round(len(maps) / dt, 1), "ms_per_wafer": round(1000 * dt / len(maps), 3)}


def run(model_path: Path, n: int, threads: int) -> dict[str, object]:
    """All figures for one model file."""
    model = WaferModel.load(model_path, intra_op_threads=threads)
    small = _real_maps(n, 64)
    mid = _real_maps(max(n // 8, 16), 128, 64)
    b8 = bench_session(model, small, 8)
    b1 = bench_session(model, small[: n // 2], 1)
    return {
        "model": str(model_path),
        "version": model.version,
        "threads": threads,
        "bucket64_batch8": b8,
        "bucket64_batch1": b1,
        "batch8_vs_batch1_speedup": round(b1["mean_ms"] / b8["mean_ms"], 2),
        "bucket128_batch8": bench_session(model, mid, 8),
        "predict_end_to_end_le64": bench_predict(model, small),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    ap.add_argument("--other", type=Path, default=None, help="Second model to compare (e.g. INT8).")
    ap.add_argument("--n", type=int, default=400, help="Maps <= 64x64 to time.")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    report: dict[str, object] = {"baseline": run(args.model, args.n, args.threads)}
    if args.other is not None:
        report["other"] = run(args.other, args.n, args.threads)
        base_ms, other_ms = compare(
            WaferModel.load(args.model, args.threads),
            WaferModel.load(args.other, args.threads),
            _real_maps(args.n, 64),
        )
        report["interleaved_batch8_ms_per_wafer"] = {
            "baseline": base_ms,
            "other": other_ms,
            "speedup_other_vs_baseline": round(base_ms / other_ms, 2),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
