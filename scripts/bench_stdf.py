"""Speed of the focused STDF reader against a decode-every-record baseline.

Writes a wafer file of 2,000 dies x 100 parametric tests (PTR) with the MIT
pystdf4 writer, then times, in the same run on the same file:

* ``read_wafers`` (skips PTRs by REC_LEN, decodes only the map records), and
* a full decode: every field of every record, with the same field decoder,
  which is what a general-purpose STDF reader does.

Prints figures only; nothing is asserted (machines here are shared and noisy).
Run: ``.venv/bin/python scripts/bench_stdf.py [--dies N] [--tests N]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pystdf4 import Stdf4Writer

from producers.formats import read_wafers
from producers.formats.stdf import KNOWN_RECORDS, PRR, Fields, scan

#: Field types of the records in the bench file, in order (STDF V4 spec).
_LAYOUTS = {
    (0, 10): "u1 u1",
    (1, 10): "u4 u4 u1 c1 c1 c1 u2 c1" + " cn" * 30,
    (1, 20): "u4 c1 cn cn",
    (1, 40): "u1 u1 u2 u4 c1 cn",
    (2, 10): "u1 u1 u4 cn",
    (2, 20): "u1 u1 u4 u4 u4 u4 u4 u4 cn cn cn cn cn cn",
    (2, 30): "r4 r4 r4 u1 c1 i2 i2 c1 c1",
    (5, 10): "u1 u1",
    (5, 20): "u1 u1 u1 u2 u2 u2 i2 i2 u4 cn cn u1",
    (15, 10): "u4 u1 u1 u1 u1 r4 cn cn u1 u1 u1 u1 r4 r4 cn cn cn cn r4 r4",
}
_LAYOUT_BY_KEY = {typ << 8 | sub: layout.split() for (typ, sub), layout in _LAYOUTS.items()}


def write_file(path: Path, dies: int, tests: int) -> None:
    with Stdf4Writer(str(path)) as w:
        w.FAR(CPU_TYPE=2, STDF_VER=4)
        w.MIR(SETUP_T=0, START_T=0, STAT_NUM=1, LOT_ID="BENCH", PART_TYP="P", NODE_NAM="N", TSTR_TYP="T", JOB_NAM="J")
        w.WCR(WAFR_SIZ=300, DIE_HT=1, DIE_WID=1, WF_UNITS=3)
        w.WIR(HEAD_NUM=1, START_T=1, WAFER_ID="W1")
        side = int(dies**0.5) + 1
        for n in range(dies):
            w.PIR(HEAD_NUM=1, SITE_NUM=1)
            for t in range(tests):
                w.PTR(TEST_NUM=t, HEAD_NUM=1, SITE_NUM=1, TEST_FLG=b"\0", PARM_FLG=b"\0", OPT_FLAG=b"\0",
                      RESULT=1.5, TEST_TXT="IDDQ", LO_LIMIT=0.0, HI_LIMIT=3.0, UNITS="A")  # fmt: skip
            w.PRR(HEAD_NUM=1, SITE_NUM=1, PART_FLG=b"\0", NUM_TEST=tests, HARD_BIN=1, X_COORD=n % side,
                  Y_COORD=n // side)  # fmt: skip
        w.WRR(HEAD_NUM=1, FINISH_T=2, PART_CNT=dies)
        w.HBR(HEAD_NUM=255, SITE_NUM=255, HBIN_NUM=1, HBIN_CNT=dies, HBIN_PF="P", HBIN_NAM="GOOD")
        w.MRR(FINISH_T=3)


def full_decode(path: Path) -> tuple[int, int]:
    """Decode every field of every record; returns (records, parts)."""
    records = parts = 0
    with path.open("rb") as stream:
        for rec, codec in scan(stream, KNOWN_RECORDS):
            fields = Fields(rec, codec)
            for kind in _LAYOUT_BY_KEY[rec.key]:
                getattr(fields, kind)()
            records += 1
            parts += rec.key == PRR
    return records + 1, parts  # + the FAR, which scan consumes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dies", type=int, default=2000)
    parser.add_argument("--tests", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.stdf"
        start = time.perf_counter()
        write_file(path, args.dies, args.tests)
        print(f"wrote {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s (pystdf4)")

        start = time.perf_counter()
        records, parts = full_decode(path)
        full_s = time.perf_counter() - start

        start = time.perf_counter()
        (wafer,) = read_wafers(path)
        focused_s = time.perf_counter() - start
    assert wafer.stats.parts == parts == args.dies
    print(f"records: {records:,}  dies: {parts:,}")
    print(f"full decode baseline: {full_s:7.3f} s  {records / full_s:12,.0f} records/s")
    print(f"focused reader:       {focused_s:7.3f} s  {records / focused_s:12,.0f} records/s")
    print(f"speed-up: {full_s / focused_s:.1f}x")


if __name__ == "__main__":
    main()
