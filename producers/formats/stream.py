"""Opening plain or gzip-compressed files, with decompression errors as ours.

Why by magic bytes: ATE hosts compress STDF (and sometimes XML) with names
that do not end in ``.gz`` (``.std``, ``.stdf_1``, ...), so the extension
cannot be trusted.
"""

from __future__ import annotations

import gzip
import zlib
from typing import BinaryIO, Final

from producers.formats.errors import CorruptFileError, TruncatedFileError

GZIP_MAGIC: Final = b"\x1f\x8b"


def decompressing(raw: BinaryIO) -> BinaryIO:
    """Wrap a seekable binary file in a gzip reader if it starts with the gzip magic."""
    magic = raw.read(2)
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw, mode="rb") if magic == GZIP_MAGIC else raw


def read_checked(stream: BinaryIO, size: int, offset: int) -> bytes:
    """``stream.read(size)``, mapping a cut or damaged gzip stream to our errors.

    ``offset`` is the position in the decompressed content, for the message.
    """
    try:
        return stream.read(size)
    except EOFError as exc:
        raise TruncatedFileError(f"gzip stream ends early ({exc})", offset=offset) from exc
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise CorruptFileError(f"bad gzip data ({exc})", offset=offset) from exc
