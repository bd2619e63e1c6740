"""``waferstream bench pipeline``: end-to-end throughput and latency vs. raw model speed.

Everything is measured in one run on one machine, so the figures that matter
are ratios: the *baseline* is onnxruntime alone on exactly the maps the
pipeline will see (same model, same micro-batch size, one process, one
thread); the *pipeline* is publish -> inference worker -> severity processor
-> PostgreSQL, with the alert notifier deciding on every assessed wafer.

Phases:
1. baseline: ``WaferModel.predict`` over the maps in worker-sized batches
   (repeated after phases 2 and 3; the median is the baseline);
2. max rate: publish N wafers at once, wafers/s from first publish to last
   assessment row (the ratio uses this one) and, to separate steady state
   from start-up and tail, between the 10th and 90th percentile of the
   assessment times;
3. half rate: publish at half the measured max rate, latency percentiles
   wafer-complete (broker timestamp of the published record) -> assessed row
   (``assessed_at``) and -> alert row for the wafers that alerted;
4. lone wafers: 20 wafers one second apart, latency to the assessed row.

Alongside, CPU accounting (:mod:`infra.bench.cpu`): the baseline's CPU per
wafer, and each component's CPU per wafer during phase 2. The CPU figures
are steadier than the wall-clock ratio on a shared machine and say where
the time goes; ``model_share_of_cpu`` (baseline CPU / pipeline CPU per
wafer) is what the ratio would be on one fully used core.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from infra.bench.cpu import CpuMeter
from infra.kafka.producer import EventProducer
from infra.local_pipeline import PIPELINE, LocalPipeline
from ml.serving import DEFAULT_MODEL_PATH, WaferModel
from producers.simulator import FabSimulator, SimulatedWafer, SimulationConfig
from schemas.topics import WAFER_TEST_COMPLETED

#: The run has its own database, so a plain count is exact, and cheap enough to
#: poll every 50 ms without stealing the CPU being measured (a 10,000-id
#: ``= ANY`` lookup was not).
DONE_QUERY = "SELECT count(*) FROM assessments"

#: Phase 4: wafers one second apart, each arriving at an idle pipeline (a fab's
#: 10,000 wafers a day are 0.12 a second, so this is the latency FA usually sees).
LONE_WAFERS = 20
LONE_RATE = 1.0


@dataclass
class Percentiles:
    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, values_ms: list[float]) -> Percentiles:
        if not values_ms:
            return cls(0, float("nan"), float("nan"), float("nan"), float("nan"))
        a = np.asarray(values_ms)
        return cls(len(a), *(round(float(np.percentile(a, q)), 1) for q in (50, 95, 99)),
                   round(float(a.max()), 1))


@dataclass
class BenchResult:
    wafers: int
    inference_processes: int
    max_side: int
    batch_size: int
    model_version: str
    baseline_wafers_per_s: float  # median of baseline_runs_wafers_per_s
    baseline_runs_wafers_per_s: list[float]
    pipeline_wafers_per_s: float  # first publish -> last assessment row of the burst
    sustained_wafers_per_s: float  # 10th -> 90th percentile of the burst's assessments
    sustained_ratio_to_baseline: float
    ratio_pipeline_to_baseline: float
    half_rate_wafers_per_s: float
    latency_to_assessed: Percentiles
    latency_to_alert: Percentiles
    lone_latency_to_assessed: Percentiles  # one wafer a second: the fab's usual pace
    baseline_cpu_ms_per_wafer: float  # median over the baseline runs (this thread's CPU)
    burst_cpu_ms_per_wafer: dict[str, float]  # phase 2, per component + total + outside
    burst_busy_cores: float  # whole machine, phase 2
    burst_steal_cores: float  # taken by the hypervisor for other guests, phase 2 (noise)
    model_share_of_cpu: float  # baseline_cpu_ms_per_wafer / burst total


def _wafers(n: int, seed: int, max_side: int) -> list[SimulatedWafer]:
    return list(FabSimulator(SimulationConfig(seed=seed, wafers=n, max_side=max_side)).wafers())


@dataclass(frozen=True)
class BaselineRun:
    wafers_per_s: float
    cpu_ms_per_wafer: float


def measure_baseline(model: WaferModel, maps: list[np.ndarray], batch: int) -> BaselineRun:
    """Wafers/s and CPU per wafer of onnxruntime alone, in the worker's micro-batch sizes."""
    model.predict(maps[:batch])  # warm-up
    started, cpu_started = time.perf_counter(), time.thread_time()
    for i in range(0, len(maps), batch):
        model.predict(maps[i : i + batch])
    cpu_s = time.thread_time() - cpu_started  # one intra-op thread: the calling thread
    return BaselineRun(len(maps) / (time.perf_counter() - started), cpu_s * 1000 / len(maps))


def _publish(producer: EventProducer, wafers: list[SimulatedWafer], rate: float) -> dict[str, float]:
    """Publish (paced if ``rate`` > 0); returns publish wall time per event id.

    One producer serves every phase, connected by the warm-up: a fresh one
    would charge its broker connection to the first wafer of a phase (it
    made the slowest lone wafer ~500 ms), and an ATE host's publisher is a
    long-lived process anyway.
    """
    sent: dict[str, float] = {}
    started = time.monotonic()
    for n, wafer in enumerate(wafers):
        if rate > 0:
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        sent[wafer.event["event_id"]] = time.time()
        producer.send(WAFER_TEST_COMPLETED, wafer.event["lot_id"], wafer.event)
    producer.flush()
    return sent


def _assessed_at(pipe: LocalPipeline, ids: list[str]) -> dict[str, float]:
    """Epoch seconds of each wafer's assessment row, by wafer-complete event id."""
    rows = pipe.fetch(
        "SELECT source_event_id, extract(epoch FROM assessed_at) AS t FROM assessments "
        "WHERE source_event_id = ANY($1::text[])", ids)
    return {r["source_event_id"]: float(r["t"]) for r in rows}


def _sustained_rate(pipe: LocalPipeline, ids: list[str]) -> float:
    """Wafers/s between the 10th and 90th percentile of assessment times (no ramp, no tail)."""
    times = np.sort(list(_assessed_at(pipe, ids).values()))
    lo, hi = int(len(times) * 0.1), int(len(times) * 0.9)
    return (hi - lo) / max(times[hi] - times[lo], 1e-9) if hi > lo else float("nan")


def _to_assessed_ms(pipe: LocalPipeline, sent: dict[str, float]) -> list[float]:
    """Milliseconds from publish to the assessment row, per wafer."""
    return [(t - sent[i]) * 1000 for i, t in _assessed_at(pipe, list(sent)).items()]


def _to_alert_ms(pipe: LocalPipeline, sent: dict[str, float]) -> list[float]:
    """Milliseconds from publish to the first alert row, for the wafers that alerted."""
    alerted = pipe.fetch(
        "SELECT a.source_event_id, min(extract(epoch FROM al.created_at)) AS t "
        "FROM alerts al JOIN assessments a ON a.assessment_event_id = al.event_id "
        "WHERE a.source_event_id = ANY($1::text[]) GROUP BY a.source_event_id", list(sent))
    return [(float(r["t"]) - sent[r["source_event_id"]]) * 1000 for r in alerted]


def default_inference_processes() -> int:
    """One inference worker per core, up to the partition count: the deployment the README gives.

    Each worker runs one onnxruntime thread, so a single worker leaves part of a
    multi-core machine idle whenever its own Python work holds the GIL.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, WAFER_TEST_COMPLETED.partitions))


def run_bench(
    wafers: int, max_side: int, out: Path | None, inference_processes: int | None = None
) -> BenchResult:
    """Run all three phases on the local pipeline and return (and optionally write) figures.

    ``inference_processes`` defaults to :func:`default_inference_processes`.
    """
    inference_processes = inference_processes or default_inference_processes()
    services = [("run", "inference")] * inference_processes + [s for s in PIPELINE if s[1] != "inference"]
    with LocalPipeline(services, tag="bench", isolate_as=f"bench_{uuid.uuid4().hex[:8]}") as pipe:
        settings = pipe.settings
        batch = settings.kafka.batch_max_messages
        model = WaferModel.load(settings.model.path or DEFAULT_MODEL_PATH, 1)
        warm = _wafers(min(50, wafers), 100, max_side)
        burst = _wafers(wafers, 101, max_side)
        paced = _wafers(wafers, 102, max_side)
        maps = [w.dies for w in burst]
        # closing(): the producer is closed even when a phase times out.
        with closing(EventProducer(settings, **{"linger.ms": 0})) as producer:
            _publish(producer, warm, 0)  # services join their groups and warm up
            pipe.wait_for(DONE_QUERY, len(warm), 180)
            # The baseline is taken three times (before, between and after the
            # pipeline phases, services idle; not during their start-up, which
            # reads low) and the median is used: single runs on the shared 2-core
            # machine varied by +-15 %, more than the effects being measured.
            baselines = [measure_baseline(model, maps, batch)]
            meter = CpuMeter({"bench": os.getpid(), **pipe.component_pids()})
            before = meter.snapshot()
            started = time.time()
            _publish(producer, burst, 0)
            finished = pipe.wait_for(DONE_QUERY, len(warm) + wafers, 600)
            burst_cpu = CpuMeter.between(before, meter.snapshot())
            burst_s = finished - started
            pipeline = wafers / burst_s
            sustained = _sustained_rate(pipe, [w.event["event_id"] for w in burst])
            baselines.append(measure_baseline(model, maps, batch))
            half = pipeline / 2
            sent = _publish(producer, paced, half)
            pipe.wait_for(DONE_QUERY, len(warm) + 2 * wafers, 600)
            time.sleep(1.0)  # let the notifier finish deciding on the last wafers
            to_assessed, to_alert = _to_assessed_ms(pipe, sent), _to_alert_ms(pipe, sent)
            baselines.append(measure_baseline(model, maps, batch))
            lone = _wafers(LONE_WAFERS, 104, max_side)
            lone_sent = _publish(producer, lone, LONE_RATE)
            pipe.wait_for(DONE_QUERY, len(warm) + 2 * wafers + len(lone), 120)
            lone_assessed = _to_assessed_ms(pipe, lone_sent)
    baseline = float(np.median([b.wafers_per_s for b in baselines]))
    baseline_cpu_ms = float(np.median([b.cpu_ms_per_wafer for b in baselines]))
    burst_ms = burst_cpu.per_item_ms(wafers)
    result = BenchResult(
        wafers=wafers, inference_processes=inference_processes, max_side=max_side, batch_size=batch, model_version=model.version,
        baseline_wafers_per_s=round(baseline, 1),
        baseline_runs_wafers_per_s=[round(b.wafers_per_s, 1) for b in baselines],
        pipeline_wafers_per_s=round(pipeline, 1),
        sustained_wafers_per_s=round(sustained, 1),
        sustained_ratio_to_baseline=round(sustained / baseline, 3),
        ratio_pipeline_to_baseline=round(pipeline / baseline, 3),
        half_rate_wafers_per_s=round(half, 1),
        latency_to_assessed=Percentiles.of(to_assessed),
        latency_to_alert=Percentiles.of(to_alert),
        lone_latency_to_assessed=Percentiles.of(lone_assessed),
        baseline_cpu_ms_per_wafer=round(baseline_cpu_ms, 3),
        burst_cpu_ms_per_wafer=burst_ms,
        burst_busy_cores=round(burst_cpu.machine_busy_s / burst_s, 2),
        burst_steal_cores=round(burst_cpu.machine_steal_s / burst_s, 3),
        model_share_of_cpu=round(baseline_cpu_ms / burst_ms["total"], 3),
    )
    if out is not None:
        out.write_text(json.dumps(asdict(result), indent=2))
    return result
