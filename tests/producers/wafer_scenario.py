"""One lot, three wafers, two heads: the maps every format test must reproduce.

The STDF scenario deliberately contains what makes wafer-sort files hard:
interleaved heads, parametric records between parts, retested dies (flagged
with PART_FLG bit 0 and bit 1), a part without coordinates, parts whose
pass/fail flag is marked invalid (bit 4) so the HBR flag must decide, a hard
bin without an HBR, a wafer id given only in the WRR, and WCR/HBR/SBR at the
end of the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from producers.formats.model import BinDefinition

N = None  # no die
#: Hard-bin maps, row r = Y - origin_y, column c = X - origin_x.
MAP_A = [
    [N, 1, 1, 1, N],
    [1, 3, 1, 1, 1],
    [1, 1, 5, 1, 1],
    [N, 1, 1, 3, N],
]
MAP_B = [
    [1, 7, 1],
    [1, 1, N],
    [7, 1, 1],
]
MAP_C = [
    [1, 1],
    [1, 1],
]

HBR_BINS = (
    BinDefinition(1, "GOOD", True),
    BinDefinition(3, "OPEN", False),
    BinDefinition(5, "SHORT", False),
)
T0 = 1_700_000_000


@dataclass(frozen=True)
class ExpectedWafer:
    wafer_id: str
    head: int
    grid: list[list[int | None]]
    origin: tuple[int, int]
    parts: int
    superseded: int
    missing_coordinates: int
    bins: tuple[BinDefinition, ...]
    start: int
    finish: int

    @property
    def hard_bins(self) -> np.ndarray:
        return np.array([[-1 if b is None else b for b in row] for row in self.grid], dtype=np.int16)

    @property
    def dies(self) -> np.ndarray:
        passing = {b.number for b in self.bins if b.passed}
        return np.array(
            [[0 if b is None else (1 if b in passing else 2) for b in row] for row in self.grid], dtype=np.uint8
        )

    @property
    def start_time(self) -> datetime:
        return datetime.fromtimestamp(self.start, tz=UTC)

    @property
    def end_time(self) -> datetime:
        return datetime.fromtimestamp(self.finish, tz=UTC)


EXPECTED = (
    ExpectedWafer("W01", 1, MAP_A, (-2, 10), 16 + 2 + 1, 2, 1, HBR_BINS, T0 + 10, T0 + 100),
    ExpectedWafer("W02", 2, MAP_B, (5, -3), 8, 0, 0, HBR_BINS + (BinDefinition(7, "", False),), T0 + 20, T0 + 200),
    ExpectedWafer("W03", 1, MAP_C, (0, 0), 4, 0, 0, HBR_BINS, T0 + 300, T0 + 400),
)

#: (x, y) -> PART_FLG override for first results in W01 (bit 4: pass/fail flag invalid).
_W01_FLAGS = {(1, 12): 0x18, (1, 13): 0x10}
#: First (later superseded) results in W01: (x, y, hard bin, PART_FLG); retests come at the end.
_W01_FIRST_TRIES = {(-1, 11): (1, 0x00), (0, 12): (3, 0x08)}
_W01_RETESTS = [(-1, 11, 3, 0x02 | 0x08), (0, 12, 5, 0x01 | 0x08)]


def _parts(expected: ExpectedWafer) -> list[tuple[int, int, int, int]]:
    """(x, y, hard_bin, PART_FLG) for every die of a map, first try for retested dies."""
    ox, oy = expected.origin
    parts = []
    for r, row in enumerate(expected.grid):
        for c, hard in enumerate(row):
            if hard is None:
                continue
            x, y = ox + c, oy + r
            flags = 0x00 if hard == 1 else 0x08
            if expected.wafer_id == "W01":
                hard, flags = _W01_FIRST_TRIES.get((x, y), (hard, _W01_FLAGS.get((x, y), flags)))
            parts.append((x, y, hard, flags))
    return parts


def _part(w: Any, head: int, site: int, part: tuple[int, int, int, int], n: int) -> None:
    x, y, hard, flags = part
    w.PIR(HEAD_NUM=head, SITE_NUM=site)
    for test in range(3):  # parametric results the reader must skip
        w.PTR(TEST_NUM=test, HEAD_NUM=head, SITE_NUM=site, TEST_FLG=b"\0", PARM_FLG=b"\0", OPT_FLAG=b"\0",
               RESULT=0.5, TEST_TXT="VDD")
    w.PRR(HEAD_NUM=head, SITE_NUM=site, PART_FLG=bytes([flags]), NUM_TEST=3, HARD_BIN=hard,
          SOFT_BIN=hard + 100, X_COORD=x, Y_COORD=y, PART_ID=str(n))  # fmt: skip


def write_scenario(w: Any, cpu_type: int = 2, *, with_mrr: bool = True) -> None:
    """Drive a pystdf4 ``Stdf4Writer`` or a ``StdfBytesWriter`` through the whole lot."""
    w1, w2, w3 = EXPECTED
    w.FAR(CPU_TYPE=cpu_type, STDF_VER=4)
    w.MIR(SETUP_T=T0, START_T=T0, STAT_NUM=1, LOT_ID="LOT42", PART_TYP="PRODX", NODE_NAM="TESTER7",
          TSTR_TYP="93K", JOB_NAM="SORT1", JOB_REV="B2", SBLOT_ID="S1", FACIL_ID="FAB9")  # fmt: skip
    w.WIR(HEAD_NUM=1, START_T=w1.start, WAFER_ID="W01")
    w.WIR(HEAD_NUM=2, START_T=w2.start, WAFER_ID="W02")
    parts1, parts2 = _parts(w1), _parts(w2)
    for n in range(max(len(parts1), len(parts2))):  # the two heads test in parallel
        if n < len(parts1):
            _part(w, 1, 1 + n % 2, parts1[n], n)
        if n < len(parts2):
            _part(w, 2, 1, parts2[n], n)
    for n, retest in enumerate(_W01_RETESTS):
        _part(w, 1, 1, retest, 1000 + n)
    w.PIR(HEAD_NUM=1, SITE_NUM=1)
    w.PRR(HEAD_NUM=1, SITE_NUM=1, PART_FLG=b"\0", NUM_TEST=0, HARD_BIN=1, SOFT_BIN=101, X_COORD=-32768, Y_COORD=5)
    w.WRR(HEAD_NUM=1, FINISH_T=w1.finish, PART_CNT=w1.parts, WAFER_ID="W01")
    w.WRR(HEAD_NUM=2, FINISH_T=w2.finish, PART_CNT=w2.parts, WAFER_ID="W02")
    w.WIR(HEAD_NUM=1, START_T=w3.start, WAFER_ID="")  # id only in the WRR
    for n, part in enumerate(_parts(w3)):
        _part(w, 1, 1, part, n)
    w.WRR(HEAD_NUM=1, FINISH_T=w3.finish, PART_CNT=w3.parts, WAFER_ID="W03")
    for head, site in ((1, 1), (1, 2), (255, 255)):  # per site and summary, as testers write them
        for b in HBR_BINS:
            pf = "P" if b.passed else "F"
            w.HBR(HEAD_NUM=head, SITE_NUM=site, HBIN_NUM=b.number, HBIN_CNT=1, HBIN_PF=pf, HBIN_NAM=b.name)
            w.SBR(HEAD_NUM=head, SITE_NUM=site, SBIN_NUM=b.number + 100, SBIN_CNT=1, SBIN_PF=pf, SBIN_NAM=b.name)
    w.WCR(WAFR_SIZ=300.0, DIE_HT=2.5, DIE_WID=4.0, WF_UNITS=3, WF_FLAT="D", POS_X="R", POS_Y="D")
    if with_mrr:
        w.MRR(FINISH_T=T0 + 500)
