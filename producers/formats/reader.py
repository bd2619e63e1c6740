"""``read_wafers``: one entry point that recognises the format by content.

Why content first: the publisher watches tester output folders where names
and extensions are unreliable (``.std``, ``.stdf.gz``, ``.dat``, no extension).
STDF (first record a FAR, REC_TYP 0 / REC_SUB 10) and XML (first
non-blank character ``<``) are recognised from their first bytes, after gzip
decompression when the gzip magic is present. Only the bare array formats,
which have no distinctive text, fall back to the extension.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from producers.formats.arrays import read_array
from producers.formats.errors import TruncatedFileError, UnsupportedFormatError, WaferFileError
from producers.formats.model import ParsedWafer
from producers.formats.semi_xml import read_semi_xml
from producers.formats.stdf import read_stdf
from producers.formats.stream import decompressing, read_checked

_SNIFF_BYTES: Final = 64
_ARRAY_SUFFIXES: Final = frozenset({".npy", ".npz", ".csv"})
_XML_PREFIXES: Final = (b"\xef\xbb\xbf", b" ", b"\t", b"\r", b"\n")


def _looks_like_xml(head: bytes) -> bool:
    stripped = head
    while stripped.startswith(_XML_PREFIXES):
        stripped = stripped[3:] if stripped.startswith(b"\xef\xbb\xbf") else stripped[1:]
    return stripped.startswith(b"<")


def _dispatch(path: Path, metadata: Mapping[str, Any] | None) -> list[ParsedWafer]:
    with path.open("rb") as raw:
        stream = decompressing(raw)
        head = read_checked(stream, _SNIFF_BYTES, 0)
        stream.seek(0)
        if len(head) >= 4 and head[2:4] == b"\x00\x0a":
            return read_stdf(stream)
        if _looks_like_xml(head):
            return read_semi_xml(read_checked(stream, -1, 0))
        if not head:
            raise TruncatedFileError("file is empty", offset=0)
    if path.suffix.lower() in _ARRAY_SUFFIXES:
        return read_array(path, metadata)
    raise UnsupportedFormatError(
        f"not STDF (no FAR), not XML, and extension {path.suffix!r} is not .npy/.npz/.csv; "
        f"first bytes {head[:16]!r}",
        offset=0,
    )


def read_wafers(path: Path, metadata: Mapping[str, Any] | None = None) -> list[ParsedWafer]:
    """Parse every wafer in an ATE output file.

    Args:
        path: STDF V4 (optionally gzip), SEMI G85/E142 XML (optionally gzip),
            or a ``.npy``/``.npz``/``.csv`` pass/fail array.
        metadata: Only for array files: lot/wafer/product... that the array
            cannot carry (overrides a ``<file>.json`` sidecar; see
            :mod:`producers.formats.arrays`). Ignored for self-describing formats.

    Returns:
        The wafers in file order (an STDF file can hold several, one per WIR).

    Raises:
        WaferFileError: a subclass saying whether the file is truncated (maybe
            still being written), corrupt, or unsupported, with ``path`` set.
    """
    path = Path(path)
    try:
        return _dispatch(path, metadata)
    except WaferFileError as exc:
        exc.path = path
        raise
