"""CPU time per pipeline component over one phase of the benchmark.

Why the benchmark measures this: on the shared 2-core machine the wall-clock
ratio pipeline/baseline swings by +-10 % between runs (the baseline alone
varied 360-450 wafers/s within one run), more than most changes being
judged. How the CPU of the phase splits between the components (model
worker, severity processor, notifier, broker, database) is steadier, and it
says where a ratio goes: when the machine is saturated, throughput is
roughly busy cores / CPU per wafer, so the model's share of the pipeline's
CPU bounds the ratio.

A component is a process tree: the process, its live descendants (e.g.
PostgreSQL's backends) and the descendants it has already reaped (psutil's
``children_*`` times), so a backend that comes and goes within the phase is
still counted. Processes that are not ours to see (an external database)
are simply not components.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import psutil


def _tree_seconds(root: psutil.Process, include_children: bool) -> float:
    """User + system CPU seconds of ``root`` (and, if asked, of all its descendants)."""
    try:
        times = root.cpu_times()
        total = times.user + times.system
        if not include_children:
            return total
        total += times.children_user + times.children_system
        for child in root.children(recursive=True):
            try:
                child_times = child.cpu_times()
            except psutil.NoSuchProcess:
                continue  # exited meanwhile: its parent's children_* times hold it now
            total += child_times.user + child_times.system
        return total
    except psutil.NoSuchProcess:
        return 0.0


def _machine_seconds() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of all cores since boot.

    Busy is any process or the kernel (guest time is already inside user
    time); stolen is time the hypervisor gave our virtual CPUs to another
    guest, the noisy neighbour that makes the same work take longer.
    """
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    return busy, getattr(t, "steal", 0.0)


@dataclass(frozen=True)
class CpuSnapshot:
    """Cumulative CPU seconds per component and of the whole machine, at one moment."""

    components: dict[str, float]
    machine_busy_s: float
    machine_steal_s: float


@dataclass(frozen=True)
class CpuUsage:
    """CPU spent between two snapshots."""

    seconds: dict[str, float]  # per component
    machine_busy_s: float  # every process on the machine, ours or not
    machine_steal_s: float  # taken by the hypervisor for other guests

    def per_item_ms(self, items: int) -> dict[str, float]:
        """Milliseconds per item (wafer) per component, plus ``total`` and ``outside``.

        ``outside`` is what the machine spent beyond the measured components
        (other tenants, the kernel): large values flag a noisy run.
        """
        measured = sum(self.seconds.values())
        figures = dict(self.seconds)
        figures["total"] = measured
        figures["outside"] = max(0.0, self.machine_busy_s - measured)
        return {name: round(s * 1000 / items, 3) for name, s in figures.items()}


class CpuMeter:
    """Snapshots of the CPU time of named process trees.

    ``roots`` maps a component name to its top process id. The process
    running the meter is measured without its children when it is one of the
    roots, because the services it launched are components of their own.
    """

    def __init__(self, roots: Mapping[str, int]) -> None:
        me = os.getpid()
        self._roots: dict[str, tuple[psutil.Process, bool]] = {}  # name -> (root, with children)
        for name, pid in roots.items():
            try:
                self._roots[name] = (psutil.Process(pid), pid != me)
            except psutil.NoSuchProcess:
                continue  # a stale pid file: nothing to measure

    def snapshot(self) -> CpuSnapshot:
        busy, steal = _machine_seconds()
        return CpuSnapshot(
            {name: _tree_seconds(proc, with_children)
             for name, (proc, with_children) in self._roots.items()},
            busy,
            steal,
        )

    @staticmethod
    def between(start: CpuSnapshot, end: CpuSnapshot) -> CpuUsage:
        return CpuUsage(
            {name: max(0.0, end.components[name] - start.components.get(name, 0.0))
             for name in end.components},
            max(0.0, end.machine_busy_s - start.machine_busy_s),
            max(0.0, end.machine_steal_s - start.machine_steal_s),
        )
