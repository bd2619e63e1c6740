"""The README's benchmark command runs on its own stack and reports every figure it promises."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from schemas.topics import WAFER_TEST_COMPLETED
from tests.servers import own_stack_cli


def test_bench_pipeline_reports_throughput_latency_and_cpu_per_component(tmp_path: Path) -> None:
    cli, env = own_stack_cli(tmp_path / "stack")
    out = tmp_path / "bench.json"
    try:
        bench = subprocess.run(
            [*cli, "bench", "pipeline", "--wafers", "128", "--json", str(out)],
            env=env, capture_output=True, text=True, timeout=400,
        )
        assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    finally:
        subprocess.run([*cli, "stack", "down"], env=env, capture_output=True, text=True)
    result = json.loads(out.read_text())
    assert result["wafers"] == 128
    # By default one inference worker per core, up to the partition count.
    cores = len(os.sched_getaffinity(0))
    assert result["inference_processes"] == min(cores, WAFER_TEST_COMPLETED.partitions)
    assert len(result["baseline_runs_wafers_per_s"]) == 3
    assert result["pipeline_wafers_per_s"] > 0
    # Ratios are computed before rounding, the rates are reported rounded.
    assert abs(result["ratio_pipeline_to_baseline"]
               - result["pipeline_wafers_per_s"] / result["baseline_wafers_per_s"]) < 0.002
    assert result["latency_to_assessed"]["count"] == 128
    assert result["lone_latency_to_assessed"]["count"] == 20
    assert 0 < result["latency_to_assessed"]["p50_ms"] <= result["latency_to_assessed"]["p99_ms"]

    cpu = result["burst_cpu_ms_per_wafer"]
    # Every service and every embedded server this run started is accounted for,
    # and the model workers, which run the model on every wafer, cost at least
    # the model's own CPU per wafer between them.
    workers = ["inference"] + [f"inference-{n}" for n in range(2, result["inference_processes"] + 1)]
    assert {*workers, "bench", "severity", "alerts", "kafka", "postgres", "redis"} <= set(cpu)
    assert sum(cpu[w] for w in workers) >= 0.8 * result["baseline_cpu_ms_per_wafer"] > 0
    assert cpu["severity"] > 0 and cpu["alerts"] > 0 and cpu["kafka"] > 0
    components = sum(v for k, v in cpu.items() if k not in ("total", "outside"))
    assert abs(cpu["total"] - components) < 0.01  # each figure is rounded on its own
    assert abs(result["model_share_of_cpu"]
               - result["baseline_cpu_ms_per_wafer"] / cpu["total"]) < 0.002
    assert result["burst_busy_cores"] > 0
    assert result["burst_steal_cores"] >= 0
