"""Acceptance 7: the README's demo command brings up the stack and processes wafers end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.servers import free_port


def test_demo_command_processes_wafers_end_to_end(tmp_path: Path) -> None:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("WAFERSTREAM_")
    }
    env.update({
        "WAFERSTREAM_DATA_DIR": str(tmp_path / "stack"),
        "WAFERSTREAM_STACK__KAFKA_PORT": str(free_port()),
        "WAFERSTREAM_STACK__POSTGRES_PORT": str(free_port()),
        "WAFERSTREAM_STACK__REDIS_PORT": str(free_port()),
    })
    if os.environ.get("WAFERSTREAM_MODEL__PATH"):
        env["WAFERSTREAM_MODEL__PATH"] = os.environ["WAFERSTREAM_MODEL__PATH"]
    cli = [sys.executable, "-m", "infra"]
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
