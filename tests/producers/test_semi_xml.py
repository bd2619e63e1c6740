"""SEMI G85 and E142 XML maps: bin maps, bin definitions, metadata, and refusal of unsafe/broken XML."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from producer_files import FIXTURES
from wafer_scenario import EXPECTED, HBR_BINS

from producers.formats import (
    CorruptFileError,
    TruncatedFileError,
    UnsafeXmlError,
    UnsupportedFormatError,
    read_wafers,
)

WriteFile = Callable[[str, bytes], Path]
W01 = EXPECTED[0]


@pytest.mark.parametrize(("name", "fmt"), [("g85_map.xml", "g85"), ("e142_map.xml", "e142")])
def test_fixture_maps_match_the_scenario_wafer(name: str, fmt: str) -> None:
    (wafer,) = read_wafers(FIXTURES / name)
    np.testing.assert_array_equal(wafer.hard_bins, W01.hard_bins)
    np.testing.assert_array_equal(wafer.dies, W01.dies)
    assert wafer.bins == HBR_BINS
    assert (wafer.lot_id, wafer.wafer_id, wafer.source_format) == ("LOT42", "W01", fmt)
    g = wafer.geometry
    assert (g.diameter_mm, g.die_width_mm, g.die_height_mm, g.notch) == (300.0, 4.0, 2.5, "D")
    assert (g.origin_x, g.origin_y) == (0, 0)


def test_g85_metadata() -> None:
    (wafer,) = read_wafers(FIXTURES / "g85_map.xml")
    assert wafer.product == "PRODX"
    assert wafer.start_time == datetime(2023, 11, 14, 22, 13, 30, tzinfo=UTC)


def test_ascii_bin_type_and_several_maps(write_file: WriteFile) -> None:
    xml = b"""<Maps>
      <Map WaferId="A"><Device LotId="L" BinType="ASCII" NullBin=".">
        <Bin BinCode="P" BinQuality="Pass" BinDescription="good"/><Bin BinCode="X" BinQuality="Fail"/>
        <Data><Row><![CDATA[.PX]]></Row><Row><![CDATA[PP.]]></Row></Data></Device></Map>
      <Map WaferId="B"><Device LotId="L" BinType="Decimal" NullBin="0">
        <Bin BinCode="1" BinQuality="Pass"/><Data><Row>0 1 9</Row></Data></Device></Map>
    </Maps>"""
    a, b = read_wafers(write_file("maps.xml.gz", gzip.compress(xml)))
    assert a.hard_bins.tolist() == [[-1, ord("P"), ord("X")], [ord("P"), ord("P"), -1]]
    assert a.dies.tolist() == [[0, 1, 2], [1, 1, 0]]
    assert b.dies.tolist() == [[0, 1, 2]]  # bin 9 has no definition: failed
    assert (a.wafer_id, b.wafer_id) == ("A", "B")


@pytest.mark.parametrize("marker", [b'<!DOCTYPE Map [<!ENTITY x "boom">]>', b'<!ENTITY x SYSTEM "file:///etc/passwd">'])
def test_dtd_and_entities_are_refused(marker: bytes, write_file: WriteFile) -> None:
    xml = b'<?xml version="1.0"?>\n' + marker + b"\n<Map WaferId='&x;'/>"
    with pytest.raises(UnsafeXmlError) as info:
        read_wafers(write_file("evil.xml", xml))
    assert info.value.line == 2


def test_cut_xml_is_truncated(write_file: WriteFile) -> None:
    data = (FIXTURES / "e142_map.xml").read_bytes()
    with pytest.raises(TruncatedFileError, match="not well-formed") as info:
        read_wafers(write_file("cut.xml", data[: len(data) - 40]))
    assert info.value.line is not None


def test_malformed_xml_is_corrupt_with_line(write_file: WriteFile) -> None:
    with pytest.raises(CorruptFileError) as info:
        read_wafers(write_file("bad.xml", b"<Maps>\n<Map>\n</Maps>"))
    assert info.value.line == 3


def test_ragged_rows_are_corrupt(write_file: WriteFile) -> None:
    xml = b'<Map WaferId="A"><Device BinType="Decimal"><Data><Row>1 1</Row><Row>1</Row></Data></Device></Map>'
    with pytest.raises(CorruptFileError, match="row 1 has 1 dies, row 0 has 2"):
        read_wafers(write_file("ragged.xml", xml))


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"<Report/>", "neither a G85 Map nor an E142 MapData"),
        (b'<Map><Device BinType="Integer2"><Data><Row>0001</Row></Data></Device></Map>', "BinType 'Integer2'"),
    ],
)
def test_unsupported_xml(xml: bytes, message: str, write_file: WriteFile) -> None:
    with pytest.raises(UnsupportedFormatError, match=message):
        read_wafers(write_file("other.xml", xml))
