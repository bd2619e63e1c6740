"""The neutral parsed wafer every format reader produces.

Why a neutral model: downstream code (publisher, analysis) must not care
whether a map came from STDF, a SEMI XML map or a numpy array. Each reader
turns its format into :class:`ParsedWafer` and nothing else.

Grid convention (all formats): ``hard_bins[r, c]`` / ``dies[r, c]`` is the die
at X = ``origin_x + c``, Y = ``origin_y + r``. No axis is flipped here; how the
grid maps onto the physical wafer is described by ``positive_x`` /
``positive_y`` so that renderers can orient it, instead of each reader
guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import numpy as np

#: ``dies`` cell values.
NO_DIE: Final[int] = 0
PASS: Final[int] = 1
FAIL: Final[int] = 2

#: ``hard_bins`` cell value where no die was tested.
NO_BIN: Final[int] = -1


@dataclass(frozen=True)
class BinDefinition:
    """A hard bin: its number, name, and whether parts in it are good."""

    number: int
    name: str
    passed: bool


@dataclass(frozen=True)
class WaferGeometry:
    """Physical wafer and die dimensions and the map's orientation."""

    diameter_mm: float | None
    die_width_mm: float | None
    die_height_mm: float | None
    #: Flat/notch side: 'U', 'D', 'L', 'R' or None when unknown.
    notch: str | None
    #: Die coordinate of grid cell (0, 0).
    origin_x: int
    origin_y: int
    #: Direction of increasing X ('L', 'R') and Y ('U', 'D'), None when unknown.
    positive_x: str | None
    positive_y: str | None


@dataclass(frozen=True)
class ParseStats:
    """What the reader saw but could not (or should not) put on the map.

    Why it exists: a parser that silently drops dies hides tester or
    prober problems; these counts let the publisher log and alert on them.
    """

    #: Part results read for this wafer (including superseded ones).
    parts: int = 0
    #: Results replaced by a later result (retest) for the same die.
    superseded: int = 0
    #: Part results without X or Y coordinate (-32768), left off the map.
    missing_coordinates: int = 0
    #: Whether the file ended properly (STDF: MRR seen). False for a file that
    #: may still be being written by the tester.
    complete: bool = True


@dataclass(frozen=True)
class ParsedWafer:
    """One tested wafer, independent of the file format it came from."""

    lot_id: str
    sublot_id: str | None
    wafer_id: str
    product: str | None
    tester: str | None
    test_program: str | None
    test_program_rev: str | None
    facility: str | None
    head: int | None
    #: UTC, tz-aware.
    start_time: datetime | None
    end_time: datetime | None
    geometry: WaferGeometry
    bins: tuple[BinDefinition, ...]
    #: int16 (rows, cols); NO_BIN (-1) where no die was tested.
    hard_bins: np.ndarray
    #: uint8 (rows, cols): NO_DIE, PASS or FAIL. The canonical wafer map.
    dies: np.ndarray
    #: 'stdf', 'e142', 'g85', 'npy', 'npz' or 'csv'.
    source_format: str
    stats: ParseStats = field(default_factory=ParseStats)
