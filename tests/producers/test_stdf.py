"""STDF V4 reader: exact maps, bins and counts from files written two independent ways."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from producer_files import scenario_bytes
from stdf_bytes_writer import StdfBytesWriter
from wafer_scenario import EXPECTED

from producers.formats import (
    CorruptFileError,
    ParsedWafer,
    TruncatedFileError,
    UnsupportedFormatError,
    read_wafers,
)
from producers.formats import stdf as stdf_module

WriteFile = Callable[[str, bytes], Path]


def assert_scenario(wafers: list[ParsedWafer]) -> None:
    assert [w.wafer_id for w in wafers] == [e.wafer_id for e in EXPECTED]
    for wafer, expected in zip(wafers, EXPECTED, strict=True):
        assert wafer.head == expected.head
        np.testing.assert_array_equal(wafer.hard_bins, expected.hard_bins)
        np.testing.assert_array_equal(wafer.dies, expected.dies)
        assert wafer.hard_bins.dtype == np.int16 and wafer.dies.dtype == np.uint8
        assert (wafer.geometry.origin_x, wafer.geometry.origin_y) == expected.origin
        assert wafer.bins == expected.bins
        assert (wafer.stats.parts, wafer.stats.superseded, wafer.stats.missing_coordinates) == (
            expected.parts,
            expected.superseded,
            expected.missing_coordinates,
        )
        assert (wafer.start_time, wafer.end_time) == (expected.start_time, expected.end_time)
        assert wafer.source_format == "stdf"
        assert wafer.stats.complete
        assert (wafer.lot_id, wafer.sublot_id, wafer.product, wafer.tester, wafer.facility) == (
            "LOT42", "S1", "PRODX", "TESTER7", "FAB9",
        )  # fmt: skip
        assert (wafer.test_program, wafer.test_program_rev) == ("SORT1", "B2")
        geometry = wafer.geometry
        assert (geometry.diameter_mm, geometry.die_width_mm, geometry.die_height_mm) == (300.0, 4.0, 2.5)
        assert (geometry.notch, geometry.positive_x, geometry.positive_y) == ("D", "R", "D")


def test_scenario_gives_exact_maps_bins_and_counts(scenario_stdf: Path) -> None:
    assert_scenario(read_wafers(scenario_stdf))


def test_gzip_is_detected_by_content_not_extension(scenario_stdf: Path, write_file: WriteFile) -> None:
    assert_scenario(read_wafers(write_file("lot42.std", gzip.compress(scenario_stdf.read_bytes()))))


@pytest.mark.parametrize("chunk", [5, 64, 4096])
def test_record_boundaries_across_read_chunks(
    chunk: int, monkeypatch: pytest.MonkeyPatch, write_file: WriteFile
) -> None:
    monkeypatch.setattr(stdf_module, "_CHUNK", chunk)
    assert_scenario(read_wafers(write_file("lot.stdf", scenario_bytes(">"))))


def test_file_without_mrr_is_marked_incomplete(write_file: WriteFile) -> None:
    wafers = read_wafers(write_file("lot.stdf", scenario_bytes(with_mrr=False)))
    assert [w.stats.complete for w in wafers] == [False, False, False]
    np.testing.assert_array_equal(wafers[0].dies, EXPECTED[0].dies)


def test_trailing_optional_fields_may_be_omitted(write_file: WriteFile) -> None:
    w = StdfBytesWriter()
    w.FAR()
    w.raw(1, 10, struct.pack("<IIBcccHc", 0, 0, 1, b" ", b" ", b" ", 0, b" ") + b"\x03LOT")  # MIR ends after LOT_ID
    w.WIR(HEAD_NUM=1, WAFER_ID="W9")
    w.raw(5, 20, struct.pack("<BBBHHHhh", 1, 1, 0, 0, 1, 1, 2, 3))  # PRR ends after Y_COORD
    w.raw(2, 20, struct.pack("<BB", 1, 255))  # WRR without FINISH_T
    (wafer,) = read_wafers(write_file("short.stdf", bytes(w.data)))
    assert (wafer.lot_id, wafer.product, wafer.wafer_id, wafer.end_time) == ("LOT", None, "W9", None)
    assert (wafer.geometry.origin_x, wafer.geometry.origin_y, wafer.dies.tolist()) == (2, 3, [[1]])


@pytest.mark.parametrize("order", ["<", ">"])
def test_cut_inside_a_record_is_truncated_with_position(order: str, write_file: WriteFile) -> None:
    data = scenario_bytes(order)
    with pytest.raises(TruncatedFileError) as info:
        read_wafers(write_file("cut.stdf", data[: len(data) // 2]))
    assert info.value.record is not None and info.value.offset is not None
    assert info.value.path is not None and "cut.stdf" in str(info.value)
    assert "remain" in str(info.value) or "header cut short" in str(info.value)


def test_cut_inside_a_header_is_truncated(write_file: WriteFile) -> None:
    data = scenario_bytes()
    cut = data[: 6 + 2]  # FAR plus half a MIR header
    with pytest.raises(TruncatedFileError, match="header cut short"):
        read_wafers(write_file("cut.stdf", cut))


def test_cut_gzip_stream_is_truncated(write_file: WriteFile) -> None:
    packed = gzip.compress(scenario_bytes())
    with pytest.raises(TruncatedFileError, match="gzip"):
        read_wafers(write_file("cut.stdf.gz", packed[:-20]))


def test_garbage_after_valid_records_is_corrupt(write_file: WriteFile) -> None:
    data = scenario_bytes()
    garbage = data + bytes(range(7, 250, 3)) * 4
    with pytest.raises(CorruptFileError, match="unknown record type") as info:
        read_wafers(write_file("bad.stdf", garbage))
    assert info.value.offset == len(data)


@pytest.mark.parametrize(
    ("far", "error", "message"),
    [
        (b"\x02\x00\x00\x0a\x00\x04", UnsupportedFormatError, "CPU_TYPE 0"),
        (b"\x02\x00\x00\x0a\x02\x03", UnsupportedFormatError, "version 3"),
        (b"\x00\x02\x00\x0a\x02\x04", CorruptFileError, "REC_LEN is 512"),
    ],
)
def test_bad_far(far: bytes, error: type[Exception], message: str, write_file: WriteFile) -> None:
    with pytest.raises(error, match=message):
        read_wafers(write_file("far.stdf", far + scenario_bytes()[6:]))


def test_part_outside_a_wafer_is_corrupt(write_file: WriteFile) -> None:
    w = StdfBytesWriter()
    w.FAR()
    w.MIR(LOT_ID="L")
    w.PRR(HEAD_NUM=3, X_COORD=0, Y_COORD=0)
    with pytest.raises(CorruptFileError, match="HEAD_NUM 3 outside any WIR/WRR") as info:
        read_wafers(write_file("orphan.stdf", bytes(w.data)))
    assert info.value.record == 2


def test_missing_mir_is_corrupt(write_file: WriteFile) -> None:
    w = StdfBytesWriter()
    w.FAR()
    with pytest.raises(CorruptFileError, match="no MIR"):
        read_wafers(write_file("nomir.stdf", bytes(w.data)))
