"""Array inputs (.npy, .npz, .csv) and the cross-format promise: same wafer, same map."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from producer_files import FIXTURES, scenario_bytes
from wafer_scenario import EXPECTED, HBR_BINS

from producers.formats import (
    BinDefinition,
    CorruptFileError,
    TruncatedFileError,
    UnsupportedFormatError,
    read_wafers,
)

WriteFile = Callable[[str, bytes], Path]
W01 = EXPECTED[0]


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def csv_bytes(array: np.ndarray) -> bytes:
    return "\n".join(",".join(str(v) for v in row) for row in array.tolist()).encode() + b"\n"


def test_every_format_gives_the_same_map_for_the_same_wafer(write_file: WriteFile) -> None:
    stdf_w01 = read_wafers(write_file("lot.stdf", scenario_bytes()))[0]
    g85 = read_wafers(FIXTURES / "g85_map.xml")[0]
    e142 = read_wafers(FIXTURES / "e142_map.xml")[0]
    npy = read_wafers(write_file("W01.npy", npy_bytes(W01.dies)))[0]
    csv = read_wafers(write_file("W01.csv", csv_bytes(W01.dies)))[0]
    npz = read_wafers(write_file("W01.npz", npz_bytes(dies=W01.dies, hard_bins=W01.hard_bins)),
                      {"bins": [b.__dict__ for b in HBR_BINS]})[0]  # fmt: skip
    for wafer in (g85, e142, npy, csv, npz):
        np.testing.assert_array_equal(wafer.dies, stdf_w01.dies)
        assert wafer.dies.dtype == np.uint8 and wafer.hard_bins.dtype == np.int16
    for wafer in (g85, e142, npz):
        np.testing.assert_array_equal(wafer.hard_bins, stdf_w01.hard_bins)
        assert wafer.bins == stdf_w01.bins == HBR_BINS


def test_bare_array_gets_pass_fail_bins_and_file_stem_as_wafer_id(write_file: WriteFile) -> None:
    (wafer,) = read_wafers(write_file("W07.npy", npy_bytes(np.array([[0, 1], [2, 1]], np.uint8))))
    assert wafer.hard_bins.tolist() == [[-1, 1], [2, 1]]
    assert [(b.number, b.passed) for b in wafer.bins] == [(1, True), (2, False)]
    assert (wafer.wafer_id, wafer.lot_id, wafer.source_format) == ("W07", "", "npy")


def test_metadata_priority_npz_then_sidecar_then_caller(write_file: WriteFile) -> None:
    dies = np.array([[1, 2]], np.uint8)
    path = write_file("m.npz", npz_bytes(dies=dies, lot_id=np.array("NPZLOT"), wafer_id=np.array("NPZW"),
                                         product=np.array("NPZP")))  # fmt: skip
    sidecar = {"wafer_id": "SIDEW", "product": "SIDEP", "start_time": "2024-01-02T03:04:05", "diameter_mm": 200,
               "notch": "D", "origin_x": -3, "head": 2}  # fmt: skip
    write_file("m.npz.json", json.dumps(sidecar).encode())
    (wafer,) = read_wafers(path, {"product": "CALLERP"})
    assert (wafer.lot_id, wafer.wafer_id, wafer.product, wafer.head) == ("NPZLOT", "SIDEW", "CALLERP", 2)
    assert wafer.start_time == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert (wafer.geometry.diameter_mm, wafer.geometry.notch, wafer.geometry.origin_x) == (200.0, "D", -3)


def test_npz_hard_bins_must_agree_with_dies(write_file: WriteFile) -> None:
    path = write_file("x.npz", npz_bytes(dies=np.array([[1, 2]], np.uint8), hard_bins=np.array([[1, 1]], np.int16)))
    with pytest.raises(CorruptFileError, match="disagree"):
        read_wafers(path, {"bins": [BinDefinition(1, "G", True).__dict__]})


@pytest.mark.parametrize(
    ("name", "data", "error", "message"),
    [
        ("bad.npy", npy_bytes(np.array([[0, 3]], np.uint8)), CorruptFileError, "value 3 at row 0, column 1"),
        ("bad.npy", npy_bytes(np.zeros(4, np.uint8)), CorruptFileError, "1-D"),
        ("cut.npy", npy_bytes(np.zeros((50, 50), np.uint8))[:-100], TruncatedFileError, "ends early"),
        ("bad.npz", npz_bytes(other=np.zeros((2, 2))), CorruptFileError, "no 'dies' entry"),
        ("bad.csv", b"0,1,2\n1,x,1\n", CorruptFileError, "line 2"),
        ("bad.csv", b"0,1,2\n\n1,1\n", CorruptFileError, "line 3: 2 cells"),
        ("map.bmp", b"BM\x00\x01", UnsupportedFormatError, "extension '.bmp'"),
        ("empty.stdf", b"", TruncatedFileError, "empty"),
    ],
    ids=["value", "1d", "cut-npy", "npz-no-dies", "csv-cell", "csv-ragged", "extension", "empty"],
)
def test_bad_array_files(name: str, data: bytes, error: type[Exception], message: str, write_file: WriteFile) -> None:
    with pytest.raises(error, match=message):
        read_wafers(write_file(name, data))


def test_bad_sidecar_is_corrupt(write_file: WriteFile) -> None:
    path = write_file("s.csv", b"1,2\n")
    write_file("s.csv.json", b"{not json")
    with pytest.raises(CorruptFileError, match="sidecar s.csv.json"):
        read_wafers(path)
