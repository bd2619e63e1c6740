"""Focused STDF V4 reader: wafer maps from FAR/MIR/WCR/WIR/PRR/WRR/HBR/SBR/MRR.

Why a focused reader: production wafer-sort files carry millions of
parametric/functional records (PTR, FTR, MPR ...) that a wafer map does not
need. A reader that decodes every field of every record runs at a few
thousand records per second in Python; this one reads the 4-byte header of
each record (REC_LEN u2, REC_TYP u1, REC_SUB u1) and jumps REC_LEN bytes
ahead unless the record is one of the few it needs. PIR is skipped too:
PRR carries the same HEAD_NUM/SITE_NUM, so PIR adds nothing to a map.

The content is read in chunks from a binary stream (plain or gzip), so memory
stays bounded whatever the file size.

Byte order comes from FAR CPU_TYPE: 1 = big endian (Sun), 2 = little endian
(i386). CPU_TYPE 0 (VAX/PDP floats) is refused.

Wafer assembly rules (why they are what they are):

* A wafer is what lies between WIR and WRR of one HEAD_NUM; PRRs are routed
  by HEAD_NUM, so two heads can test two wafers interleaved in one file.
* A die is its (X_COORD, Y_COORD). A later PRR for the same coordinate
  supersedes the earlier one: that is what a retest is (PART_FLG bit 0/1
  say "supersedes a previous part"), and testers that re-probe after an abort
  do not always set the bits, yet the later result is still the die's final
  state. Superseded results are counted, not shown.
* A PRR with X or Y = -32768 (missing) cannot be placed; it is counted in
  :attr:`ParseStats.missing_coordinates` and left off the map.
* Pass/fail comes from PART_FLG bit 3 (0 pass, 1 fail). When bit 4 says the
  flag is invalid, the HBR pass flag of the hard bin decides, then the SBR
  flag of the soft bin; a die with no pass indication at all is failed.
* WCR, HBR and SBR may appear anywhere (HBR/SBR usually at the very end), so
  wafers are finished only when the whole file has been read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from struct import Struct
from typing import BinaryIO, Final

from producers.formats.errors import (
    CorruptFileError,
    TruncatedFileError,
    UnsupportedFormatError,
)
from producers.formats.grid import grid_from_points
from producers.formats.model import BinDefinition, ParsedWafer, ParseStats, WaferGeometry
from producers.formats.stream import read_checked


def _key(rec_typ: int, rec_sub: int) -> int:
    return rec_typ << 8 | rec_sub


FAR: Final = _key(0, 10)
MIR: Final = _key(1, 10)
MRR: Final = _key(1, 20)
HBR: Final = _key(1, 40)
SBR: Final = _key(1, 50)
WIR: Final = _key(2, 10)
WRR: Final = _key(2, 20)
WCR: Final = _key(2, 30)
PRR: Final = _key(5, 20)

#: Records the map needs; everything else is skipped by length.
_WANTED: Final = frozenset({MIR, MRR, HBR, SBR, WIR, WRR, WCR, PRR})

#: Every record type of STDF V4 (and V4-2007). Anything else means we are
#: reading garbage, which is reported as corruption rather than misread.
KNOWN_RECORDS: Final = frozenset(
    _key(t, s)
    for t, s in (
        (0, 10), (0, 20), (0, 30), (1, 10), (1, 20), (1, 30), (1, 40), (1, 50), (1, 60),
        (1, 62), (1, 63), (1, 70), (1, 80), (1, 90), (1, 91), (1, 92), (1, 93), (1, 94),
        (2, 10), (2, 20), (2, 30), (5, 10), (5, 20), (10, 30), (15, 10), (15, 15), (15, 20),
        (15, 30), (20, 10), (20, 20), (50, 10), (50, 30),
    )
)  # fmt: skip
#: REC_TYP values reserved for user-defined records; any REC_SUB is legal.
_USER_TYPES: Final = frozenset({180, 181})

_BYTE_ORDER: Final = {1: ">", 2: "<"}
_CHUNK: Final = 1 << 20
_MISSING_COORD: Final = -32768
_UNIT_TO_MM: Final = {1: 25.4, 2: 10.0, 3: 1.0, 4: 0.0254}


class _Codec:
    """Precompiled structs for one byte order."""

    def __init__(self, order: str) -> None:
        self.header = Struct(order + "HBB")
        self.u1 = Struct(order + "B")
        self.u2 = Struct(order + "H")
        self.u4 = Struct(order + "I")
        self.i2 = Struct(order + "h")
        self.r4 = Struct(order + "f")


@dataclass(frozen=True)
class RawRecord:
    """One record's body, still encoded: ``data[start:end]``."""

    key: int
    data: bytes
    start: int
    end: int
    index: int
    offset: int


class Fields:
    """Sequential decoder of one record's fields.

    STDF lets a writer omit trailing optional fields (the record simply ends
    early), so every getter returns None past the end of the record instead
    of failing.
    """

    __slots__ = ("_codec", "_rec", "_pos")

    def __init__(self, rec: RawRecord, codec: _Codec) -> None:
        self._rec = rec
        self._codec = codec
        self._pos = rec.start

    def _take(self, packer: Struct) -> int | float | None:
        pos = self._pos
        if pos + packer.size > self._rec.end:
            self._pos = self._rec.end
            return None
        self._pos = pos + packer.size
        value: int | float = packer.unpack_from(self._rec.data, pos)[0]
        return value

    def u1(self) -> int | None:
        return self._take(self._codec.u1)  # type: ignore[return-value]

    def u2(self) -> int | None:
        return self._take(self._codec.u2)  # type: ignore[return-value]

    def u4(self) -> int | None:
        return self._take(self._codec.u4)  # type: ignore[return-value]

    def i2(self) -> int | None:
        return self._take(self._codec.i2)  # type: ignore[return-value]

    def r4(self) -> float | None:
        return self._take(self._codec.r4)

    def c1(self) -> str | None:
        value = self.u1()
        return None if value is None else chr(value)

    def cn(self) -> str | None:
        """Pascal string (u1 length + bytes), decoded as Latin-1 (never fails)."""
        length = self.u1()
        if length is None:
            return None
        pos, end = self._pos, self._pos + length
        if end > self._rec.end:
            raise CorruptFileError(
                f"string field of {length} bytes runs past the end of its record",
                record=self._rec.index,
                offset=self._rec.offset + 4 + (pos - self._rec.start),
            )
        self._pos = end
        return self._rec.data[pos:end].decode("latin-1")

    def skip(self, nbytes: int) -> None:
        self._pos = min(self._pos + nbytes, self._rec.end)


def _open_far(head: bytes) -> _Codec:
    """Validate the FAR (first 6 bytes) and choose the byte order from CPU_TYPE."""
    if len(head) < 6:
        raise TruncatedFileError(f"only {len(head)} bytes, shorter than a FAR", offset=0)
    if (head[2], head[3]) != (0, 10):
        raise CorruptFileError(
            f"first record is REC_TYP {head[2]} REC_SUB {head[3]}, not a FAR (0, 10)",
            record=0,
            offset=0,
        )
    cpu_type, stdf_ver = head[4], head[5]
    if cpu_type not in _BYTE_ORDER:
        raise UnsupportedFormatError(
            f"FAR CPU_TYPE {cpu_type} is not supported (1 = Sun big endian, 2 = i386 little endian)",
            record=0,
            offset=4,
        )
    if stdf_ver != 4:
        raise UnsupportedFormatError(f"STDF version {stdf_ver}; only V4 is read", record=0, offset=5)
    codec = _Codec(_BYTE_ORDER[cpu_type])
    rec_len = codec.u2.unpack_from(head, 0)[0]
    if rec_len != 2:
        raise CorruptFileError(
            f"FAR REC_LEN is {rec_len} in the byte order of CPU_TYPE {cpu_type}; expected 2",
            record=0,
            offset=0,
        )
    return codec


def scan(stream: BinaryIO, wanted: frozenset[int] = _WANTED) -> Iterator[tuple[RawRecord, _Codec]]:
    """Yield the records whose key is in ``wanted``; skip all others by REC_LEN.

    The yielded ``RawRecord.data`` is the current read buffer: decode a record
    before asking for the next one. The FAR is consumed here (it sets the
    byte order) and never yielded.

    Raises:
        TruncatedFileError: a header or record body runs past the end of the content.
        CorruptFileError: an unknown record type (garbage) or an invalid FAR.
        UnsupportedFormatError: not STDF V4, or a VAX CPU_TYPE.
    """
    buf = read_checked(stream, max(_CHUNK, 6), 0)
    codec = _open_far(buf[:6])
    header = codec.header
    base, off, n, index, eof = 0, 6, len(buf), 1, False
    while True:
        if off + 4 <= n:
            rec_len, rec_typ, rec_sub = header.unpack_from(buf, off)
            end = off + 4 + rec_len
            if end <= n:
                key = rec_typ << 8 | rec_sub
                if key in wanted:
                    yield RawRecord(key, buf, off + 4, end, index, base + off), codec
                elif key not in KNOWN_RECORDS and rec_typ not in _USER_TYPES:
                    raise _unknown_record(rec_len, rec_typ, rec_sub, index, base + off)
                off = end
                index += 1
                continue
        if not eof:
            more = read_checked(stream, _CHUNK, base + n)
            eof = not more
            buf, base, off = buf[off:] + more, base + off, 0
            n = len(buf)
            continue
        if off == n:
            return
        if off + 4 > n:
            raise TruncatedFileError(
                f"record header cut short: {n - off} of 4 bytes", record=index, offset=base + off
            )
        rec_len, rec_typ, rec_sub = header.unpack_from(buf, off)
        if _key(rec_typ, rec_sub) not in KNOWN_RECORDS and rec_typ not in _USER_TYPES:
            raise _unknown_record(rec_len, rec_typ, rec_sub, index, base + off)
        raise TruncatedFileError(
            f"REC_TYP {rec_typ} REC_SUB {rec_sub} declares {rec_len} bytes, only {n - off - 4} remain",
            record=index,
            offset=base + off,
        )


def _unknown_record(rec_len: int, rec_typ: int, rec_sub: int, index: int, offset: int) -> CorruptFileError:
    return CorruptFileError(
        f"unknown record type REC_TYP {rec_typ} REC_SUB {rec_sub} (REC_LEN {rec_len})",
        record=index,
        offset=offset,
    )


def _timestamp(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds else None


def _text(value: str | None) -> str | None:
    """Empty/blank STDF strings mean 'not given'."""
    if value is None:
        return None
    return value.strip() or None


def _mm(value: float | None, units: int | None) -> float | None:
    if not value or units not in _UNIT_TO_MM:
        return None
    return round(float(value) * _UNIT_TO_MM[units], 6)


def _side(value: str | None, allowed: str) -> str | None:
    return value if value is not None and value in allowed else None


@dataclass
class _Lot:
    lot_id: str = ""
    sublot_id: str | None = None
    product: str | None = None
    tester: str | None = None
    test_program: str | None = None
    test_program_rev: str | None = None
    facility: str | None = None


@dataclass
class _Wafer:
    head: int
    wafer_id: str
    start_time: datetime | None
    end_time: datetime | None = None
    #: (x, y) -> (hard_bin, soft_bin, passed or None when PART_FLG says "no indication")
    dies: dict[tuple[int, int], tuple[int, int, bool | None]] = field(default_factory=dict)
    parts: int = 0
    superseded: int = 0
    missing_coordinates: int = 0


@dataclass
class _BinInfo:
    name: str = ""
    passed: bool | None = None

    def merge(self, name: str | None, pass_flag: str | None) -> None:
        """HBR/SBR repeat per site and as a summary; keep the first real name and flag."""
        if not self.name and name:
            self.name = name.strip()
        if self.passed is None and pass_flag in ("P", "F"):
            self.passed = pass_flag == "P"


@dataclass
class _FileState:
    """Everything collected while scanning; turned into wafers at EOF."""

    lot: _Lot | None = None
    geometry: tuple[float | None, float | None, float | None, str | None, str | None, str | None] = (
        None, None, None, None, None, None,
    )  # fmt: skip
    open_wafers: dict[int, _Wafer] = field(default_factory=dict)
    wafers: list[_Wafer] = field(default_factory=list)
    hard_bins: dict[int, _BinInfo] = field(default_factory=dict)
    soft_bins: dict[int, _BinInfo] = field(default_factory=dict)
    complete: bool = False


def _on_mir(f: Fields, state: _FileState) -> None:
    f.skip(4 + 4 + 1 + 1 + 1 + 1 + 2 + 1)  # SETUP_T .. CMOD_COD
    lot_id, part_typ, node_nam, _tstr_typ, job_nam, job_rev, sblot_id = (
        f.cn(), f.cn(), f.cn(), f.cn(), f.cn(), f.cn(), f.cn()
    )
    for _ in range(10):  # OPER_NAM .. DATE_COD
        f.cn()
    state.lot = _Lot(
        lot_id=(lot_id or "").strip(),
        sublot_id=_text(sblot_id),
        product=_text(part_typ),
        tester=_text(node_nam),
        test_program=_text(job_nam),
        test_program_rev=_text(job_rev),
        facility=_text(f.cn()),
    )


def _on_wcr(f: Fields, state: _FileState) -> None:
    wafr_siz, die_ht, die_wid, units, flat = f.r4(), f.r4(), f.r4(), f.u1(), f.c1()
    f.skip(4)  # CENTER_X, CENTER_Y
    pos_x, pos_y = f.c1(), f.c1()
    state.geometry = (
        _mm(wafr_siz, units),
        _mm(die_wid, units),
        _mm(die_ht, units),
        _side(flat, "UDLR"),
        _side(pos_x, "LR"),
        _side(pos_y, "UD"),
    )


def _on_wir(f: Fields, state: _FileState, rec: RawRecord) -> None:
    head, _site_grp, start_t, wafer_id = f.u1(), f.u1(), f.u4(), f.cn()
    if head is None:
        raise CorruptFileError("WIR without HEAD_NUM", record=rec.index, offset=rec.offset)
    wafer = _Wafer(head=head, wafer_id=(wafer_id or "").strip(), start_time=_timestamp(start_t))
    # A WIR while a wafer is still open on this head means the tester lost the
    # WRR (aborted wafer): the earlier wafer keeps its dies, with no end time.
    state.open_wafers[head] = wafer
    state.wafers.append(wafer)


def _open_wafer(state: _FileState, head: int | None, rec: RawRecord, what: str) -> _Wafer:
    wafer = state.open_wafers.get(head) if head is not None else None
    if wafer is None:
        raise CorruptFileError(
            f"{what} for HEAD_NUM {head} outside any WIR/WRR of that head",
            record=rec.index,
            offset=rec.offset,
        )
    return wafer


def _on_wrr(f: Fields, state: _FileState, rec: RawRecord) -> None:
    head, _site_grp, finish_t = f.u1(), f.u1(), f.u4()
    wafer = _open_wafer(state, head, rec, "WRR")
    f.skip(4 * 5)  # PART_CNT, RTST_CNT, ABRT_CNT, GOOD_CNT, FUNC_CNT
    wafer_id = _text(f.cn())
    wafer.end_time = _timestamp(finish_t)
    if not wafer.wafer_id and wafer_id:
        wafer.wafer_id = wafer_id
    del state.open_wafers[wafer.head]


def _on_prr(f: Fields, state: _FileState, rec: RawRecord) -> None:
    head, _site, flags, _num_test, hard_bin, soft_bin, x, y = (
        f.u1(), f.u1(), f.u1(), f.u2(), f.u2(), f.u2(), f.i2(), f.i2()
    )  # fmt: skip
    wafer = _open_wafer(state, head, rec, "PRR")
    if flags is None or hard_bin is None:
        raise CorruptFileError("PRR too short for PART_FLG/HARD_BIN", record=rec.index, offset=rec.offset)
    if hard_bin > 0x7FFF:
        raise UnsupportedFormatError(
            f"HARD_BIN {hard_bin} does not fit the int16 bin map", record=rec.index, offset=rec.offset
        )
    wafer.parts += 1
    if x is None or y is None or x == _MISSING_COORD or y == _MISSING_COORD:
        wafer.missing_coordinates += 1
        return
    passed = None if flags & 0x10 else not flags & 0x08
    if (x, y) in wafer.dies:
        wafer.superseded += 1
    wafer.dies[(x, y)] = (hard_bin, 0xFFFF if soft_bin is None else soft_bin, passed)


def _on_bin(f: Fields, table: dict[int, _BinInfo]) -> None:
    f.skip(2)  # HEAD_NUM, SITE_NUM: names and flags are the same on every site
    number, _count, pass_flag, name = f.u2(), f.u4(), f.c1(), f.cn()
    if number is not None:
        table.setdefault(number, _BinInfo()).merge(name, pass_flag)


def _finish(wafer: _Wafer, state: _FileState) -> ParsedWafer:
    lot = state.lot or _Lot()
    hbr, sbr = state.hard_bins, state.soft_bins
    points: dict[tuple[int, int], tuple[int, bool]] = {}
    seen: dict[int, bool] = {}  # hard bin -> all its dies passed
    for xy, (hard, soft, passed) in wafer.dies.items():
        if passed is None:
            passed = next(
                (info.passed for info in (hbr.get(hard), sbr.get(soft)) if info and info.passed is not None),
                False,
            )
        points[xy] = (hard, passed)
        seen[hard] = seen.get(hard, True) and passed
    bins = {n: BinDefinition(n, info.name, bool(info.passed)) for n, info in hbr.items()}
    for number, all_passed in seen.items():
        if number not in bins or hbr[number].passed is None:
            # No HBR pass flag: describe the bin by what its dies did.
            bins[number] = BinDefinition(number, hbr[number].name if number in hbr else "", all_passed)
    hard_bins, dies, origin_x, origin_y = grid_from_points(points)
    diameter, die_w, die_h, notch, pos_x, pos_y = state.geometry
    return ParsedWafer(
        lot_id=lot.lot_id,
        sublot_id=lot.sublot_id,
        wafer_id=wafer.wafer_id,
        product=lot.product,
        tester=lot.tester,
        test_program=lot.test_program,
        test_program_rev=lot.test_program_rev,
        facility=lot.facility,
        head=wafer.head,
        start_time=wafer.start_time,
        end_time=wafer.end_time,
        geometry=WaferGeometry(diameter, die_w, die_h, notch, origin_x, origin_y, pos_x, pos_y),
        bins=tuple(sorted(bins.values(), key=lambda b: b.number)),
        hard_bins=hard_bins,
        dies=dies,
        source_format="stdf",
        stats=ParseStats(
            parts=wafer.parts,
            superseded=wafer.superseded,
            missing_coordinates=wafer.missing_coordinates,
            complete=state.complete,
        ),
    )


def read_stdf(stream: BinaryIO) -> list[ParsedWafer]:
    """Parse an STDF V4 stream (already decompressed) into one ParsedWafer per WIR.

    Raises:
        WaferFileError: see :func:`scan`; also CorruptFileError for a file
            without MIR or with part/wafer records outside a WIR/WRR bracket.
    """
    state = _FileState()
    for rec, codec in scan(stream):
        f = Fields(rec, codec)
        if rec.key == PRR:
            _on_prr(f, state, rec)
        elif rec.key == WIR:
            _on_wir(f, state, rec)
        elif rec.key == WRR:
            _on_wrr(f, state, rec)
        elif rec.key == HBR:
            _on_bin(f, state.hard_bins)
        elif rec.key == SBR:
            _on_bin(f, state.soft_bins)
        elif rec.key == MIR:
            _on_mir(f, state)
        elif rec.key == WCR:
            _on_wcr(f, state)
        elif rec.key == MRR:
            state.complete = True
    if state.lot is None:
        raise CorruptFileError("no MIR record: not a valid STDF V4 file")
    return [_finish(wafer, state) for wafer in state.wafers]
