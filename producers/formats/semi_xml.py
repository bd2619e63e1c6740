"""SEMI XML wafer maps: the G85 XML map and the E142 substrate map.

Both are bin-code maps: rows of per-die bin codes plus bin definitions
(``BinCode``, ``BinQuality`` Pass/Fail, ``BinDescription``), so they share the
row decoding and bin handling here and differ only in where those pieces sit
in the tree.

* G85: ``<Map WaferId=..>`` (optionally inside ``<Maps>``) with one
  ``<Device LotId ProductId WaferSize DeviceSizeX DeviceSizeY Orientation
  BinType NullBin>`` holding ``<Bin .../>`` definitions and
  ``<Data><Row><![CDATA[..]]></Row>..</Data>``.
* E142: ``<MapData>`` with ``<Layouts>`` (die size, wafer size),
  ``<Substrates>`` (lot id per wafer) and ``<SubstrateMaps>``; each
  ``<SubstrateMap SubstrateId=..>`` carries a ``<BinCodeMap BinType NullBin>``
  with ``<BinDefinitions>`` and one ``<BinCode>`` row per die row.

Row encodings (``BinType``): ``Decimal`` (whitespace-separated numbers),
``HexaDecimal`` (two hex digits per die) and ``ASCII`` (one character per die;
the bin number is the character's code point). The ``NullBin`` code marks
"no die" (-1 in ``hard_bins``, 0 in ``dies``).

Grid convention: row 0 of the file is grid row 0, so ``origin_x/origin_y``
are 0 and the XML's own orientation attributes are not reinterpreted.

Safety: XML with a DTD or entity declarations is refused (billion-laughs and
external-entity attacks) without a new dependency; the check is a byte
search, so only ASCII-compatible encodings (UTF-8, Latin-1 ...) are accepted.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Final
from xml.parsers import expat

import numpy as np

from producers.formats.errors import (
    CorruptFileError,
    TruncatedFileError,
    UnsafeXmlError,
    UnsupportedFormatError,
)
from producers.formats.grid import dies_from_bins
from producers.formats.model import NO_BIN, BinDefinition, ParsedWafer, WaferGeometry

#: Codes expat reports when the document simply stops early.
_TRUNCATION_CODES: Final = frozenset(
    {
        expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS],
        expat.errors.codes[expat.errors.XML_ERROR_UNCLOSED_TOKEN],
    }
)
_UNIT_TO_MM: Final = {"mm": 1.0, "micron": 0.001, "um": 0.001, "cm": 10.0, "mil": 0.0254, "inch": 25.4, "in": 25.4}
#: G85 Orientation / E142 notch angle in degrees (clockwise from top) -> notch side.
_ANGLE_TO_SIDE: Final = {0: "U", 90: "R", 180: "D", 270: "L"}


def parse_root(data: bytes) -> ET.Element:
    """Parse safely and strip namespaces (E142 documents are namespaced, G85 usually not)."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4]:
        raise UnsupportedFormatError("XML in a UTF-16/32 encoding; only ASCII-compatible encodings are read")
    for marker in (b"<!DOCTYPE", b"<!ENTITY"):
        if (pos := data.find(marker)) >= 0:
            raise UnsafeXmlError(
                f"XML declares {marker[2:].decode()}; DTDs and entities are refused",
                offset=pos,
                line=data.count(b"\n", 0, pos) + 1,
            )
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line = exc.position[0]
        error = TruncatedFileError if exc.code in _TRUNCATION_CODES else CorruptFileError
        raise error(f"XML is not well-formed ({exc.msg})", line=line) from exc
    for element in root.iter():
        element.tag = element.tag.rpartition("}")[2]
    return root


def _code_reader(bin_type: str) -> Callable[[str], list[int]]:
    """Return a function turning one row's text into its bin codes."""
    kind = bin_type.strip().lower()
    if kind == "decimal":
        return lambda text: [int(token) for token in text.split()]
    if kind == "hexadecimal":

        def hex_pairs(text: str) -> list[int]:
            compact = "".join(text.split())
            if len(compact) % 2:
                raise ValueError(f"odd number of hex digits ({len(compact)})")
            return [int(compact[i : i + 2], 16) for i in range(0, len(compact), 2)]

        return hex_pairs
    if kind == "ascii":
        return lambda text: [ord(char) for char in text.strip("\r\n")]
    raise UnsupportedFormatError(f"BinType {bin_type!r}; supported: Decimal, HexaDecimal, ASCII")


def _single_code(read: Callable[[str], list[int]], text: str, what: str) -> int:
    try:
        codes = read(text)
    except ValueError as exc:
        raise CorruptFileError(f"{what} {text!r} is not a valid bin code ({exc})") from exc
    if len(codes) != 1:
        raise CorruptFileError(f"{what} {text!r} is not a single bin code")
    return codes[0]


def _bin_grid(rows: list[str], bin_type: str, null_bin: str | None) -> np.ndarray:
    """Decode row texts into an int16 hard-bin grid, NullBin -> NO_BIN."""
    read = _code_reader(bin_type)
    decoded: list[list[int]] = []
    for index, text in enumerate(rows):
        try:
            decoded.append(read(text))
        except ValueError as exc:
            raise CorruptFileError(f"map row {index} has an invalid bin code ({exc})") from exc
        if len(decoded[-1]) != len(decoded[0]):
            raise CorruptFileError(f"map row {index} has {len(decoded[-1])} dies, row 0 has {len(decoded[0])}")
    if not decoded:
        return np.full((0, 0), NO_BIN, np.int16)
    grid = np.array(decoded, dtype=np.int32)
    if null_bin is not None:
        grid[grid == _single_code(read, null_bin, "NullBin")] = NO_BIN
    if grid.max(initial=0) > np.iinfo(np.int16).max:
        raise UnsupportedFormatError(f"bin code {grid.max()} does not fit the int16 bin map")
    return grid.astype(np.int16)


def _bins(elements: Iterable[ET.Element], bin_type: str) -> tuple[BinDefinition, ...]:
    read = _code_reader(bin_type)
    bins = {
        (code := _single_code(read, el.get("BinCode", ""), "BinCode")): BinDefinition(
            code, el.get("BinDescription", ""), el.get("BinQuality", "").strip().lower() == "pass"
        )
        for el in elements
    }
    return tuple(sorted(bins.values(), key=lambda b: b.number))


def _float(value: str | None, scale: float = 1.0) -> float | None:
    try:
        number = float(value) if value else 0.0
    except ValueError:
        return None
    return round(number * scale, 6) if number > 0 else None


def _notch(angle: str | None) -> str | None:
    try:
        return _ANGLE_TO_SIDE.get(int(float(angle))) if angle else None
    except ValueError:
        return None


def _time(value: str | None) -> datetime | None:
    """ISO 8601 or G85's compact ``YYYYMMDDhhmmss...``; naive times are taken as UTC."""
    if not value:
        return None
    text = value.strip()
    try:
        moment = (
            datetime.strptime(text[:14], "%Y%m%d%H%M%S") if text.isdigit() else datetime.fromisoformat(text)
        )
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _text(value: str | None) -> str | None:
    return value.strip() or None if value else None


def _wafer(
    *,
    source_format: str,
    lot_id: str | None,
    wafer_id: str | None,
    product: str | None,
    start_time: datetime | None,
    geometry: tuple[float | None, float | None, float | None, str | None],
    bins: tuple[BinDefinition, ...],
    hard_bins: np.ndarray,
) -> ParsedWafer:
    diameter, die_w, die_h, notch = geometry
    return ParsedWafer(
        lot_id=lot_id or "",
        sublot_id=None,
        wafer_id=wafer_id or "",
        product=product,
        tester=None,
        test_program=None,
        test_program_rev=None,
        facility=None,
        head=None,
        start_time=start_time,
        end_time=None,
        geometry=WaferGeometry(diameter, die_w, die_h, notch, 0, 0, None, None),
        bins=bins,
        hard_bins=hard_bins,
        dies=dies_from_bins(hard_bins, bins),
        source_format=source_format,
    )


def _read_g85(root: ET.Element) -> list[ParsedWafer]:
    maps = [root] if root.tag == "Map" else root.findall("Map")
    wafers = []
    for map_el in maps:
        device = map_el.find("Device")
        if device is None:
            raise CorruptFileError(f"G85 Map {map_el.get('WaferId')!r} has no Device element")
        bin_type = device.get("BinType", "Decimal")
        rows = [row.text or "" for row in device.iterfind("Data/Row")]
        wafers.append(
            _wafer(
                source_format="g85",
                lot_id=_text(device.get("LotId")),
                wafer_id=_text(map_el.get("WaferId") or device.get("WaferId")),
                product=_text(device.get("ProductId")),
                start_time=_time(device.get("CreateDate")),
                geometry=(
                    _float(device.get("WaferSize")),
                    _float(device.get("DeviceSizeX"), 0.001),
                    _float(device.get("DeviceSizeY"), 0.001),
                    _notch(device.get("Orientation")),
                ),
                bins=_bins(device.iterfind("Bin"), bin_type),
                hard_bins=_bin_grid(rows, bin_type, device.get("NullBin")),
            )
        )
    return wafers


def _layout_sizes(root: ET.Element) -> tuple[float | None, float | None, float | None]:
    """(wafer diameter, die width, die height) in mm from E142 Layouts.

    The top-level layout's DeviceSize is the wafer; the innermost layout's is the die.
    """
    diameter = die_w = die_h = None
    for layout in root.iterfind("Layouts/Layout"):
        size = layout.find("DeviceSize")
        if size is None:
            continue
        scale = _UNIT_TO_MM.get(layout.get("DefaultUnits", "mm").strip().lower())
        if scale is None:
            continue
        if layout.get("TopLevel", "").lower() == "true":
            diameter = _float(size.get("X"), scale)
        else:
            die_w, die_h = _float(size.get("X"), scale), _float(size.get("Y"), scale)
    return diameter, die_w, die_h


def _read_e142(root: ET.Element) -> list[ParsedWafer]:
    diameter, die_w, die_h = _layout_sizes(root)
    lots = {
        substrate.get("SubstrateId"): _text(substrate.findtext("LotId"))
        for substrate in root.iterfind("Substrates/Substrate")
    }
    wafers = []
    for smap in root.iterfind("SubstrateMaps/SubstrateMap"):
        substrate_id = smap.get("SubstrateId")
        code_map = smap.find(".//BinCodeMap")
        if code_map is None:
            raise CorruptFileError(f"E142 SubstrateMap {substrate_id!r} has no BinCodeMap")
        bin_type = code_map.get("BinType", "Decimal")
        wafers.append(
            _wafer(
                source_format="e142",
                lot_id=lots.get(substrate_id),
                wafer_id=_text(substrate_id),
                product=None,
                start_time=None,
                geometry=(diameter, die_w, die_h, _notch(smap.get("Orientation"))),
                bins=_bins(code_map.iterfind("BinDefinitions/BinDefinition"), bin_type),
                hard_bins=_bin_grid(
                    [row.text or "" for row in code_map.iterfind("BinCode")], bin_type, code_map.get("NullBin")
                ),
            )
        )
    return wafers


def read_semi_xml(data: bytes) -> list[ParsedWafer]:
    """Parse a G85 (root ``Map``/``Maps``) or E142 (root ``MapData``) XML wafer map.

    Raises:
        UnsafeXmlError: DTD or entity declarations present.
        TruncatedFileError: the document stops before its root element closes.
        CorruptFileError: not well-formed, ragged rows, or invalid bin codes.
        UnsupportedFormatError: another XML root element, or an unsupported BinType.
    """
    root = parse_root(data)
    if root.tag in ("Map", "Maps"):
        return _read_g85(root)
    if root.tag == "MapData":
        return _read_e142(root)
    raise UnsupportedFormatError(f"XML root element <{root.tag}> is neither a G85 Map nor an E142 MapData")
