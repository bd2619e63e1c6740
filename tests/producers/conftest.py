"""Fixtures for the producer tests: STDF files written by two independent writers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pystdf4 import Stdf4Writer
from stdf_bytes_writer import StdfBytesWriter
from wafer_scenario import write_scenario

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "producers"


def scenario_bytes(order: str = "<", **kwargs: bool) -> bytes:
    """The scenario lot as written by the byte-level writer in ``order`` ('<' or '>')."""
    writer = StdfBytesWriter(order)
    write_scenario(writer, cpu_type=2 if order == "<" else 1, **kwargs)
    return bytes(writer.data)


def pystdf4_file(path: Path) -> Path:
    """The scenario lot as written by pystdf4 (little endian only)."""
    with Stdf4Writer(str(path)) as writer:
        write_scenario(writer)
    return path


@pytest.fixture(params=["pystdf4", "bytes-little", "bytes-big"])
def scenario_stdf(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "lot42.stdf"
    if request.param == "pystdf4":
        return pystdf4_file(path)
    path.write_bytes(scenario_bytes("<" if request.param == "bytes-little" else ">"))
    return path


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, bytes], Path]:
    def write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return write
