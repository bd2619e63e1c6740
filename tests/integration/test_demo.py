"""Acceptance 7: the README's demo command brings up the stack and processes wafers end to end."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.servers import own_stack_cli


def test_demo_command_processes_wafers_end_to_end(tmp_path: Path) -> None:
    cli, env = own_stack_cli(tmp_path / "stack")
    try:
        demo = subprocess.run(
            [*cli, "demo", "--wafers", "12", "--timeout", "150"],
            env=env, capture_output=True, text=True, timeout=240,
        )
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        assert "all 12 wafers processed end to end" in demo.stdout
        status = subprocess.run([*cli, "stack", "status"], env=env, capture_output=True, text=True)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("healthy") == 3
    finally:
        down = subprocess.run([*cli, "stack", "down"], env=env, capture_output=True, text=True)
    assert down.returncode == 0, down.stderr
    assert "kafka" in down.stdout and "postgres" in down.stdout
