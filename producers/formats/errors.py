"""Errors raised when an ATE output file cannot be turned into a wafer map.

Why a hierarchy: the publisher treats the cases differently. A
:class:`TruncatedFileError` usually means the tester is still writing the
file (retry later); a :class:`CorruptFileError` or
:class:`UnsupportedFormatError` will not heal by waiting (quarantine the file
and alert). Every error carries *where* it happened (byte offset, record
index or line) so that an engineer can open the file at the right place.
"""

from __future__ import annotations

from pathlib import Path


class WaferFileError(Exception):
    """Base class: a wafer file could not be parsed.

    Attributes:
        reason: What is wrong, in words.
        path: The file, when known (filled in by :func:`producers.formats.read_wafers`).
        offset: Byte offset in the (decompressed) content, when known.
        record: 0-based record index (STDF), when known.
        line: 1-based line number (XML, CSV), when known.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: Path | None = None,
        offset: int | None = None,
        record: int | None = None,
        line: int | None = None,
    ) -> None:
        self.reason = reason
        self.path = path
        self.offset = offset
        self.record = record
        self.line = line
        super().__init__(reason)

    def __str__(self) -> str:
        where = [
            label
            for label in (
                str(self.path) if self.path is not None else None,
                f"record {self.record}" if self.record is not None else None,
                f"byte offset {self.offset}" if self.offset is not None else None,
                f"line {self.line}" if self.line is not None else None,
            )
            if label is not None
        ]
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


class TruncatedFileError(WaferFileError):
    """The content ends in the middle of a record, element or gzip stream."""


class CorruptFileError(WaferFileError):
    """The content is complete but not valid for its format."""


class UnsupportedFormatError(WaferFileError):
    """The content is not a format (or variant of one) this package reads."""


class UnsafeXmlError(UnsupportedFormatError):
    """The XML declares a DTD or entities; refused to rule out entity-expansion attacks."""
