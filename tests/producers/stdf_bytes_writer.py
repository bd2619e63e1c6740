"""A tiny byte-level STDF V4 writer for tests, in either byte order.

Why besides pystdf4: pystdf4 only writes little-endian files, and a reader
tested only against one writer can share that writer's misreading of the
spec. This one packs each record with ``struct`` straight from the field
tables of the STDF V4 specification, and mirrors pystdf4's method names so
the same scenario code drives both.
"""

from __future__ import annotations

import struct
from typing import Any

# (field name, type, default) in record order, per the STDF V4 specification.
_SPECS: dict[str, tuple[int, int, tuple[tuple[str, str, Any], ...]]] = {
    "FAR": (0, 10, (("CPU_TYPE", "U1", 2), ("STDF_VER", "U1", 4))),
    "MIR": (1, 10, (
        ("SETUP_T", "U4", 0), ("START_T", "U4", 0), ("STAT_NUM", "U1", 1), ("MODE_COD", "C1", " "),
        ("RTST_COD", "C1", " "), ("PROT_COD", "C1", " "), ("BURN_TIM", "U2", 65535), ("CMOD_COD", "C1", " "),
        ("LOT_ID", "Cn", ""), ("PART_TYP", "Cn", ""), ("NODE_NAM", "Cn", ""), ("TSTR_TYP", "Cn", ""),
        ("JOB_NAM", "Cn", ""), ("JOB_REV", "Cn", ""), ("SBLOT_ID", "Cn", ""), ("OPER_NAM", "Cn", ""),
        ("EXEC_TYP", "Cn", ""), ("EXEC_VER", "Cn", ""), ("TEST_COD", "Cn", ""), ("TST_TEMP", "Cn", ""),
        ("USER_TXT", "Cn", ""), ("AUX_FILE", "Cn", ""), ("PKG_TYP", "Cn", ""), ("FAMLY_ID", "Cn", ""),
        ("DATE_COD", "Cn", ""), ("FACIL_ID", "Cn", ""),
    )),
    "MRR": (1, 20, (("FINISH_T", "U4", 0), ("DISP_COD", "C1", " "))),
    "HBR": (1, 40, (
        ("HEAD_NUM", "U1", 255), ("SITE_NUM", "U1", 255), ("HBIN_NUM", "U2", 0), ("HBIN_CNT", "U4", 0),
        ("HBIN_PF", "C1", " "), ("HBIN_NAM", "Cn", ""),
    )),
    "SBR": (1, 50, (
        ("HEAD_NUM", "U1", 255), ("SITE_NUM", "U1", 255), ("SBIN_NUM", "U2", 0), ("SBIN_CNT", "U4", 0),
        ("SBIN_PF", "C1", " "), ("SBIN_NAM", "Cn", ""),
    )),
    "WIR": (2, 10, (("HEAD_NUM", "U1", 1), ("SITE_GRP", "U1", 255), ("START_T", "U4", 0), ("WAFER_ID", "Cn", ""))),
    "WRR": (2, 20, (
        ("HEAD_NUM", "U1", 1), ("SITE_GRP", "U1", 255), ("FINISH_T", "U4", 0), ("PART_CNT", "U4", 0),
        ("RTST_CNT", "U4", 0), ("ABRT_CNT", "U4", 0), ("GOOD_CNT", "U4", 0), ("FUNC_CNT", "U4", 0),
        ("WAFER_ID", "Cn", ""),
    )),
    "WCR": (2, 30, (
        ("WAFR_SIZ", "R4", 0.0), ("DIE_HT", "R4", 0.0), ("DIE_WID", "R4", 0.0), ("WF_UNITS", "U1", 0),
        ("WF_FLAT", "C1", " "), ("CENTER_X", "I2", -32768), ("CENTER_Y", "I2", -32768),
        ("POS_X", "C1", " "), ("POS_Y", "C1", " "),
    )),
    "PIR": (5, 10, (("HEAD_NUM", "U1", 1), ("SITE_NUM", "U1", 1))),
    "PRR": (5, 20, (
        ("HEAD_NUM", "U1", 1), ("SITE_NUM", "U1", 1), ("PART_FLG", "B1", b"\0"), ("NUM_TEST", "U2", 0),
        ("HARD_BIN", "U2", 0), ("SOFT_BIN", "U2", 65535), ("X_COORD", "I2", -32768), ("Y_COORD", "I2", -32768),
        ("TEST_T", "U4", 0), ("PART_ID", "Cn", ""),
    )),
    "PTR": (15, 10, (
        ("TEST_NUM", "U4", 0), ("HEAD_NUM", "U1", 1), ("SITE_NUM", "U1", 1), ("TEST_FLG", "B1", b"\0"),
        ("PARM_FLG", "B1", b"\0"), ("RESULT", "R4", 0.0), ("TEST_TXT", "Cn", ""),
    )),
}  # fmt: skip
_STRUCT = {"U1": "B", "U2": "H", "U4": "I", "I2": "h", "R4": "f"}


class StdfBytesWriter:
    """Collects records in memory; ``data`` is the file content."""

    def __init__(self, order: str = "<") -> None:
        self.order = order
        self.data = bytearray()

    def raw(self, rec_typ: int, rec_sub: int, body: bytes) -> None:
        self.data += struct.pack(self.order + "HBB", len(body), rec_typ, rec_sub) + body

    def __getattr__(self, name: str) -> Any:
        if name not in _SPECS:
            raise AttributeError(name)
        rec_typ, rec_sub, fields = _SPECS[name]

        def write(*args: Any, **kwargs: Any) -> None:
            values = dict(zip((f[0] for f in fields), args, strict=False)) | kwargs
            body = bytearray()
            for field, kind, default in fields:
                value = values.get(field, default)
                if kind == "Cn":
                    body += bytes([len(value)]) + value.encode("latin-1")
                elif kind == "C1":
                    body += value.encode("latin-1")
                elif kind == "B1":
                    body += value
                else:
                    body += struct.pack(self.order + _STRUCT[kind], value)
            self.raw(rec_typ, rec_sub, bytes(body))

        return write
