"""Loads the Avro event contracts shipped in ``schemas/avro``.

The ``.avsc`` files are the only definition of each event shape: services
build and read plain dicts validated against them (no twin classes that could
drift). Shared record types (DieMap, WaferGeometry, ...) live in their own
files and are referenced by full name; :func:`fastavro.schema.load_schema`
inlines them, so every event schema here is self-contained, which is also
what a Schema Registry is given.

Readers must understand payloads written with older versions of a schema, so
besides the current version of each event the catalog knows every released
version recorded in ``schemas/compat/lock.json`` (append-only; see
:mod:`schemas.compat`), indexed by CRC-64-AVRO fingerprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Final

import fastavro
import fastavro.schema

AVRO_DIR: Final[Path] = Path(__file__).parent / "avro"
LOCK_FILE: Final[Path] = Path(__file__).parent / "compat" / "lock.json"
NAMESPACE: Final[str] = "io.waferstream"

#: Short event-type names used in code, mapped to Avro full names.
EVENT_TYPES: Final[dict[str, str]] = {
    "wafer_test_completed": f"{NAMESPACE}.WaferTestCompleted",
    "wafer_segmented": f"{NAMESPACE}.WaferSegmented",
    "wafer_assessed": f"{NAMESPACE}.WaferAssessed",
    "lot_excursion": f"{NAMESPACE}.LotExcursion",
    "alert_notification": f"{NAMESPACE}.AlertNotification",
    "annotation_requested": f"{NAMESPACE}.AnnotationRequested",
    "annotation_batch_completed": f"{NAMESPACE}.AnnotationBatchCompleted",
    "model_lifecycle": f"{NAMESPACE}.ModelLifecycle",
}


def fingerprint(canonical_form: str) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint used by single-object encoding."""
    return bytes.fromhex(fastavro.schema.fingerprint(canonical_form, "CRC-64-AVRO"))


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one event schema."""

    full_name: str
    version: int
    parsed: Any  # fastavro parsed schema
    canonical: str

    @cached_property
    def codec_schema(self) -> Any:
        """``parsed`` with fastavro's parse hint, so encode/decode skip re-parsing it.

        ``parsed`` itself stays hint-free: canonical forms and the registry
        expansion are computed from it.
        """
        return fastavro.parse_schema(self.parsed)

    @cached_property
    def fingerprint(self) -> bytes:
        # Cached: the CRC-64 runs in pure Python and every encode frames with it.
        return fingerprint(self.canonical)


def load_current(full_name: str, avro_dir: Path = AVRO_DIR) -> Any:
    """Parse the current ``.avsc`` of ``full_name`` with its referenced types inlined."""
    path = avro_dir / f"{full_name}.avsc"
    if not path.exists():
        raise KeyError(f"no schema file {path.name} in {avro_dir}")
    return fastavro.schema.load_schema(str(path), _write_hint=False)


def read_lock(lock_file: Path = LOCK_FILE) -> dict[str, list[str]]:
    """Released canonical forms per event full name, oldest first."""
    if not lock_file.exists():
        return {}
    data: dict[str, list[str]] = json.loads(lock_file.read_text())
    return data


class SchemaCatalog:
    """Current schemas for writing, every released version for reading."""

    def __init__(self, avro_dir: Path = AVRO_DIR, lock_file: Path = LOCK_FILE) -> None:
        lock = read_lock(lock_file)
        self._current: dict[str, SchemaVersion] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for full_name in EVENT_TYPES.values():
            parsed = load_current(full_name, avro_dir)
            canonical = fastavro.schema.to_parsing_canonical_form(parsed)
            released = lock.get(full_name, [])
            version = released.index(canonical) + 1 if canonical in released else len(released) + 1
            current = SchemaVersion(full_name, version, parsed, canonical)
            self._current[full_name] = current
            self._by_fingerprint[current.fingerprint] = current
            for number, old_canonical in enumerate(released, start=1):
                if old_canonical == canonical:
                    continue
                old = SchemaVersion(
                    full_name,
                    number,
                    fastavro.parse_schema(json.loads(old_canonical), _write_hint=False),
                    old_canonical,
                )
                self._by_fingerprint[old.fingerprint] = old

    def current(self, event_type: str) -> SchemaVersion:
        """The schema new events of ``event_type`` (short or full name) are written with."""
        full_name = EVENT_TYPES.get(event_type, event_type)
        try:
            return self._current[full_name]
        except KeyError:
            raise KeyError(f"unknown event type {event_type!r}") from None

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        """The writer schema for a single-object payload, or None if unknown."""
        return self._by_fingerprint.get(fp)


@lru_cache(maxsize=1)
def default_catalog() -> SchemaCatalog:
    """The catalog of the schemas shipped with this installation (loaded once)."""
    return SchemaCatalog()
