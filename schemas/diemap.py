"""The compact inline die-map encoding carried by wafer events.

A die grid of ``uint8`` codes (0 no die, 1 pass, 2 fail) compresses to a few
hundred bytes with zlib for a typical map and stays well under 100 kB for a
300x300 map, so events stay small enough for Kafka's default message size
while carrying the whole map: no lookup on the hot path. Hard-bin numbers
travel optionally as a second, int16 grid.
"""

from __future__ import annotations

import zlib
from typing import Any, Final

import numpy as np

from schemas.errors import InvalidEvent

NO_DIE: Final[int] = 0
PASS: Final[int] = 1
FAIL: Final[int] = 2
MAX_SIDE: Final[int] = 1024


def encode_die_map(dies: np.ndarray, hard_bins: np.ndarray | None = None) -> dict[str, Any]:
    """Build the ``DieMap`` record for a 2-D grid of die codes."""
    grid = np.ascontiguousarray(dies, dtype=np.uint8)
    _check_grid(grid)
    record: dict[str, Any] = {
        "rows": int(grid.shape[0]),
        "cols": int(grid.shape[1]),
        "codes": zlib.compress(grid.tobytes(), 6),
        "hard_bins": None,
    }
    if hard_bins is not None:
        if hard_bins.shape != grid.shape:
            raise InvalidEvent(f"hard_bins shape {hard_bins.shape} != dies shape {grid.shape}")
        record["hard_bins"] = zlib.compress(np.ascontiguousarray(hard_bins, "<i2").tobytes(), 6)
    return record


def decode_die_map(record: dict[str, Any]) -> np.ndarray:
    """The ``uint8`` die grid of a ``DieMap`` record; raises InvalidEvent if inconsistent."""
    rows, cols = int(record["rows"]), int(record["cols"])
    if not (0 < rows <= MAX_SIDE and 0 < cols <= MAX_SIDE):
        raise InvalidEvent(f"die map size {rows}x{cols} outside 1..{MAX_SIDE}")
    try:
        raw = zlib.decompress(record["codes"], bufsize=rows * cols + 1)
    except zlib.error as exc:
        raise InvalidEvent(f"die map codes are not zlib data: {exc}") from exc
    if len(raw) != rows * cols:
        raise InvalidEvent(f"die map has {len(raw)} codes, expected {rows}x{cols}={rows * cols}")
    grid = np.frombuffer(raw, dtype=np.uint8).reshape(rows, cols)
    _check_grid(grid)
    return grid


def decode_hard_bins(record: dict[str, Any]) -> np.ndarray | None:
    """The int16 hard-bin grid, if the event carries one."""
    if record.get("hard_bins") is None:
        return None
    rows, cols = int(record["rows"]), int(record["cols"])
    raw = zlib.decompress(record["hard_bins"])
    if len(raw) != rows * cols * 2:
        raise InvalidEvent("hard_bins grid size does not match the die map")
    return np.frombuffer(raw, dtype="<i2").reshape(rows, cols)


def _check_grid(grid: np.ndarray) -> None:
    if grid.ndim != 2 or grid.size == 0:
        raise InvalidEvent(f"die map must be a non-empty 2-D grid, got shape {grid.shape}")
    if grid.shape[0] > MAX_SIDE or grid.shape[1] > MAX_SIDE:
        raise InvalidEvent(f"die map {grid.shape} larger than {MAX_SIDE} per side")
    if int(grid.max()) > FAIL:
        raise InvalidEvent(f"die code {int(grid.max())} is not one of 0 (none), 1 (pass), 2 (fail)")
    if not (grid != NO_DIE).any():
        raise InvalidEvent("die map has no dies")
