"""Validation of the identifiers that name lots, wafers and products.

Ids end up in object-store keys, file names, SQL rows and log lines, so they
are checked once, at the edge: a lot id like ``../../etc`` is rejected, never
written anywhere.
"""

from __future__ import annotations

import re
from typing import Final

from schemas.errors import InvalidEvent

_ID: Final[re.Pattern[str]] = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")


def validate_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a safe identifier, else raise :class:`InvalidEvent`.

    Allowed: 1-64 characters of letters, digits, ``.``, ``_`` and ``-``, not
    starting with a dot or dash and never ``..`` (no path traversal, no
    hidden files, no separators).
    """
    if not isinstance(value, str) or not _ID.match(value) or ".." in value:
        raise InvalidEvent(f"invalid {what} {value!r}: use 1-64 of [A-Za-z0-9._-], no '..'")
    return value
