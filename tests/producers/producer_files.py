"""STDF scenario files written by two independent writers, and the fixture folder.

A plainly named module (not conftest) so test modules can import it whatever
other conftest modules the full suite has loaded.
"""

from __future__ import annotations

from pathlib import Path

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
