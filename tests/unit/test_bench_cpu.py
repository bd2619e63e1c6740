"""CPU accounting of the benchmark: process trees, reaped children, idle processes."""

from __future__ import annotations

import subprocess
import sys

from infra.bench.cpu import CpuMeter, CpuUsage

#: Waits for a line on stdin, then runs a child that burns 0.3 s of CPU and is
#: reaped, burns 0.3 s itself, says "done" and waits for stdin to close.
_BURNER = """
import subprocess, sys, time
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
sys.stdin.readline()
subprocess.run([sys.executable, "-c", "import time\\nend = time.process_time() + 0.3\\n"
                "while time.process_time() < end: pass"], check=True)
burn(0.3)
print("done", flush=True)
sys.stdin.read()
"""


def test_meter_counts_a_process_tree_including_reaped_children_and_not_idle_processes() -> None:
    burner = subprocess.Popen([sys.executable, "-c", _BURNER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    idle = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    try:
        meter = CpuMeter({"burner": burner.pid, "idle": idle.pid})
        before = meter.snapshot()
        assert burner.stdin is not None and burner.stdout is not None
        burner.stdin.write("go\n")
        burner.stdin.flush()
        assert burner.stdout.readline().strip() == "done"
        usage = CpuMeter.between(before, meter.snapshot())
    finally:
        for proc in (burner, idle):
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)
    # 0.3 s of its own plus 0.3 s of a child that had already exited and been
    # reaped: without the children's times it would read about 0.3 s.
    assert usage.seconds["burner"] >= 0.5, usage
    assert usage.seconds["idle"] < 0.1, usage
    assert usage.machine_busy_s >= usage.seconds["burner"] * 0.9


def test_meter_skips_a_process_that_no_longer_exists() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    meter = CpuMeter({"gone": gone.pid})
    assert CpuMeter.between(meter.snapshot(), meter.snapshot()).seconds == {}


def test_per_item_figures_add_up_and_name_what_ran_outside() -> None:
    usage = CpuUsage({"inference": 2.0, "severity": 0.5}, machine_busy_s=3.0, machine_steal_s=0.0)
    figures = usage.per_item_ms(1000)
    assert figures == {"inference": 2.0, "severity": 0.5, "total": 2.5, "outside": 0.5}
