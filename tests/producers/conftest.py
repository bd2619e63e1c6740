"""Fixtures for the producer tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from producer_files import pystdf4_file, scenario_bytes


@pytest.fixture(params=["pystdf4", "bytes-little", "bytes-big"])
def scenario_stdf(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The scenario lot from each writer and byte order."""
    path = tmp_path / "lot42.stdf"
    if request.param == "pystdf4":
        return pystdf4_file(path)
    path.write_bytes(scenario_bytes("<" if request.param == "bytes-little" else ">"))
    return path


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, bytes], Path]:
    """Write bytes to a named file in the test's temporary folder."""

    def write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return write
