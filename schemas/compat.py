"""Schema evolution guard: every change to an ``.avsc`` must stay backward compatible.

Backward compatible means a reader using the *current* schema can decode every
payload written with any *released* schema (the versions recorded in
``schemas/compat/lock.json``). Consumers are upgraded before producers, so
this is the direction that keeps a rolling deployment and a topic replay of
old data working.

``waferstream schemas check`` (run in CI) fails on an incompatible change;
``waferstream schemas lock`` records the current schemas as a new release.
The rules are the Avro specification's schema-resolution rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema

from schemas.catalog import AVRO_DIR, EVENT_TYPES, LOCK_FILE, load_current, read_lock

_PROMOTIONS: dict[str, set[str]] = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema["type"])
    return str(schema)


def _name(schema: Any) -> str | None:
    return schema.get("name") if isinstance(schema, dict) else None


def incompatibilities(writer: Any, reader: Any, path: str = "$") -> list[str]:
    """Reasons a ``reader`` cannot decode data written with ``writer`` (empty = compatible)."""
    wk, rk = _kind(writer), _kind(reader)
    if wk == "union":
        # Every branch the writer may have used must be readable.
        problems: list[str] = []
        for branch in writer:
            problems += incompatibilities(branch, reader, path)
        return problems
    if rk == "union":
        if any(not incompatibilities(writer, branch, path) for branch in reader):
            return []
        return [f"{path}: writer type {wk} matches no branch of the reader union"]
    if wk != rk:
        if rk in _PROMOTIONS.get(wk, set()):
            return []
        return [f"{path}: type changed from {wk} to {rk}"]
    if wk in {"record", "enum", "fixed"} and _name(writer) != _name(reader):
        aliases = reader.get("aliases", []) if isinstance(reader, dict) else []
        if _name(writer) not in aliases:
            return [f"{path}: named type {_name(writer)} renamed to {_name(reader)}"]
    if wk == "record":
        return _record_problems(writer, reader, path)
    if wk == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            return [f"{path}: enum symbols {sorted(missing)} removed without a default"]
        return []
    if wk == "array":
        return incompatibilities(writer["items"], reader["items"], f"{path}[]")
    if wk == "map":
        return incompatibilities(writer["values"], reader["values"], f"{path}{{}}")
    if wk == "fixed" and writer["size"] != reader["size"]:
        return [f"{path}: fixed size changed"]
    return []


def _record_problems(writer: dict[str, Any], reader: dict[str, Any], path: str) -> list[str]:
    written = {f["name"]: f for f in writer["fields"]}
    problems: list[str] = []
    for field in reader["fields"]:
        name = field["name"]
        source = written.get(name) or next(
            (written[a] for a in field.get("aliases", []) if a in written), None
        )
        if source is None:
            if "default" not in field:
                problems.append(f"{path}.{name}: new field without a default")
            continue
        problems += incompatibilities(source["type"], field["type"], f"{path}.{name}")
    return problems


def check(avro_dir: Path = AVRO_DIR, lock_file: Path = LOCK_FILE) -> dict[str, list[str]]:
    """Incompatibilities of every current schema against each of its released versions."""
    lock = read_lock(lock_file)
    report: dict[str, list[str]] = {}
    for full_name in EVENT_TYPES.values():
        reader = _resolved(load_current(full_name, avro_dir))
        for version, canonical in enumerate(lock.get(full_name, []), start=1):
            writer = _resolved(fastavro.parse_schema(json.loads(canonical), _write_hint=False))
            for problem in incompatibilities(writer, reader):
                report.setdefault(full_name, []).append(f"v{version}: {problem}")
    return report


def lock(avro_dir: Path = AVRO_DIR, lock_file: Path = LOCK_FILE) -> list[str]:
    """Record each current schema as a release if it is new; returns what was added."""
    problems = check(avro_dir, lock_file)
    if problems:
        raise ValueError(f"refusing to lock incompatible schemas: {problems}")
    data = read_lock(lock_file)
    added: list[str] = []
    for full_name in EVENT_TYPES.values():
        canonical = fastavro.schema.to_parsing_canonical_form(load_current(full_name, avro_dir))
        versions = data.setdefault(full_name, [])
        if canonical not in versions:
            versions.append(canonical)
            added.append(f"{full_name} v{len(versions)}")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock_file.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return added


def _resolved(parsed: Any) -> Any:
    """A plain-JSON copy of a parsed schema with named references inlined (full names)."""
    return json.loads(json.dumps(fastavro.schema.expand_schema(parsed)))
