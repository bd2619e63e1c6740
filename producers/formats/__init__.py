"""Turn ATE output (STDF V4, SEMI G85/E142 XML, plain arrays) into neutral parsed wafers."""

from producers.formats.errors import (
    CorruptFileError,
    TruncatedFileError,
    UnsafeXmlError,
    UnsupportedFormatError,
    WaferFileError,
)
from producers.formats.model import BinDefinition, ParsedWafer, ParseStats, WaferGeometry
from producers.formats.reader import read_wafers

__all__ = [
    "BinDefinition",
    "CorruptFileError",
    "ParseStats",
    "ParsedWafer",
    "TruncatedFileError",
    "UnsafeXmlError",
    "UnsupportedFormatError",
    "WaferFileError",
    "WaferGeometry",
    "read_wafers",
]
