"""Plain pass/fail arrays: ``.npy``, ``.npz`` and ``.csv`` wafer maps.

Why they exist: simulators, the training pipeline and hand-made test maps
produce bare arrays rather than ATE files. The array *is* the canonical
``dies`` map (uint8, 0 no die, 1 pass, 2 fail); ``hard_bins`` is derived from
it (bin 1 = pass, bin 2 = fail, -1 no die) unless an ``.npz`` carries its own
``hard_bins``.

Metadata: arrays carry none, so it comes from, in increasing priority,

1. ``.npz`` scalar entries named like the keys below,
2. a sidecar JSON file next to the array, named ``<file name>.json``
   (``W07.npy`` -> ``W07.npy.json``),
3. the ``metadata`` mapping the caller passes to ``read_wafers``.

Keys: ``lot_id``, ``sublot_id``, ``wafer_id``, ``product``, ``tester``,
``test_program``, ``test_program_rev``, ``facility``, ``head``,
``start_time`` / ``end_time`` (ISO 8601; naive = UTC), ``diameter_mm``,
``die_width_mm``, ``die_height_mm``, ``notch``, ``positive_x``,
``positive_y``, ``origin_x``, ``origin_y`` and ``bins`` (list of
``{"number", "name", "passed"}``). ``wafer_id`` defaults to the file stem,
``lot_id`` to "" (the publisher decides whether that is acceptable).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from producers.formats.errors import CorruptFileError, TruncatedFileError, UnsupportedFormatError
from producers.formats.grid import dies_from_bins
from producers.formats.model import FAIL, NO_BIN, PASS, BinDefinition, ParsedWafer, WaferGeometry

#: Bins of a bare pass/fail map.
DEFAULT_BINS: Final = (BinDefinition(PASS, "PASS", True), BinDefinition(FAIL, "FAIL", False))

_STRING_KEYS: Final = (
    "lot_id", "sublot_id", "wafer_id", "product", "tester", "test_program", "test_program_rev", "facility",
    "notch", "positive_x", "positive_y",
)  # fmt: skip
_NUMBER_KEYS: Final = ("head", "diameter_mm", "die_width_mm", "die_height_mm", "origin_x", "origin_y")


def sidecar_path(path: Path) -> Path:
    """Where the metadata JSON of an array file lives."""
    return path.with_name(path.name + ".json")


def _check_dies(dies: np.ndarray, where: str) -> np.ndarray:
    if dies.ndim != 2:
        raise CorruptFileError(f"{where} is {dies.ndim}-D; a wafer map is 2-D")
    if not np.issubdtype(dies.dtype, np.integer):
        raise CorruptFileError(f"{where} has dtype {dies.dtype}; expected integers 0/1/2")
    bad = ~np.isin(dies, (0, 1, 2))
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise CorruptFileError(f"{where} has value {dies[row, col]} at row {row}, column {col}; allowed 0, 1, 2")
    return dies.astype(np.uint8)


def _load_npy(path: Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    try:
        dies = np.load(path, allow_pickle=False)
    except EOFError as exc:
        raise TruncatedFileError(f"npy data ends early ({exc})") from exc
    except ValueError as exc:
        if "could only read" in str(exc):  # numpy's wording for a short data section
            raise TruncatedFileError(f"npy data ends early ({exc})") from exc
        raise CorruptFileError(f"not a readable .npy array ({exc})") from exc
    return _check_dies(dies, "array"), None, {}


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            entries = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, EOFError) as exc:
        raise TruncatedFileError(f"npz archive is incomplete ({exc})") from exc
    except ValueError as exc:
        raise CorruptFileError(f"npz entry is not a readable array ({exc})") from exc
    if "dies" not in entries:
        raise CorruptFileError(f"npz has no 'dies' entry (entries: {sorted(entries)})")
    dies = _check_dies(entries.pop("dies"), "npz 'dies'")
    hard_bins = entries.pop("hard_bins", None)
    if hard_bins is not None and hard_bins.shape != dies.shape:
        raise CorruptFileError(f"npz 'hard_bins' shape {hard_bins.shape} differs from 'dies' {dies.shape}")
    meta = {name: value.item() for name, value in entries.items() if value.ndim == 0}
    return dies, None if hard_bins is None else hard_bins.astype(np.int16), meta


def _load_csv(path: Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    rows: list[list[int]] = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append([int(cell) for cell in line.split(",")])
            except ValueError as exc:
                raise CorruptFileError(f"non-integer cell ({exc})", line=line_no) from exc
            if len(rows[-1]) != len(rows[0]):
                raise CorruptFileError(f"{len(rows[-1])} cells, the first row has {len(rows[0])}", line=line_no)
    dies = np.array(rows, dtype=np.int64).reshape(len(rows), len(rows[0]) if rows else 0)
    return _check_dies(dies, "csv"), None, {}


_LOADERS: Final = {".npy": _load_npy, ".npz": _load_npz, ".csv": _load_csv}


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _merged_metadata(
    path: Path, embedded: dict[str, Any], caller: Mapping[str, Any] | None
) -> dict[str, Any]:
    meta = dict(embedded)
    sidecar = sidecar_path(path)
    if sidecar.exists():
        try:
            loaded = json.loads(sidecar.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CorruptFileError(f"sidecar {sidecar.name} is not JSON ({exc.msg})", line=exc.lineno) from exc
        if not isinstance(loaded, dict):
            raise CorruptFileError(f"sidecar {sidecar.name} is not a JSON object")
        meta.update(loaded)
    meta.update(caller or {})
    return meta


def read_array(path: Path, metadata: Mapping[str, Any] | None = None) -> list[ParsedWafer]:
    """Read one wafer from an ``.npy``, ``.npz`` or ``.csv`` file (see module doc for metadata).

    Raises:
        UnsupportedFormatError: another extension.
        CorruptFileError: not 2-D, values other than 0/1/2, ragged CSV, bad metadata.
        TruncatedFileError: an incomplete ``.npy``/``.npz``.
    """
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise UnsupportedFormatError(f"extension {path.suffix!r} is not an array format (.npy, .npz, .csv)")
    dies, hard_bins, embedded = loader(path)
    meta = _merged_metadata(path, embedded, metadata)
    try:
        text = {key: (str(meta[key]) if meta.get(key) not in (None, "") else None) for key in _STRING_KEYS}
        numbers = {key: meta.get(key) for key in _NUMBER_KEYS}
        bins = (
            tuple(BinDefinition(int(b["number"]), str(b["name"]), bool(b["passed"])) for b in meta["bins"])
            if "bins" in meta
            else DEFAULT_BINS
        )
        start_time, end_time = _time(meta.get("start_time")), _time(meta.get("end_time"))
        head = None if numbers["head"] is None else int(numbers["head"])
        geometry = WaferGeometry(
            diameter_mm=_optional_float(numbers["diameter_mm"]),
            die_width_mm=_optional_float(numbers["die_width_mm"]),
            die_height_mm=_optional_float(numbers["die_height_mm"]),
            notch=text["notch"],
            origin_x=int(numbers["origin_x"] or 0),
            origin_y=int(numbers["origin_y"] or 0),
            positive_x=text["positive_x"],
            positive_y=text["positive_y"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"invalid metadata ({exc!r})") from exc
    if hard_bins is None:
        hard_bins = np.where(dies > 0, dies.astype(np.int16), np.int16(NO_BIN))
    elif not np.array_equal(dies_from_bins(hard_bins, bins), dies):
        raise CorruptFileError("npz 'hard_bins' disagree with 'dies' under the given bin definitions")
    return [
        ParsedWafer(
            lot_id=text["lot_id"] or "",
            sublot_id=text["sublot_id"],
            wafer_id=text["wafer_id"] or path.stem,
            product=text["product"],
            tester=text["tester"],
            test_program=text["test_program"],
            test_program_rev=text["test_program_rev"],
            facility=text["facility"],
            head=head,
            start_time=start_time,
            end_time=end_time,
            geometry=geometry,
            bins=bins,
            hard_bins=hard_bins,
            dies=dies,
            source_format=path.suffix.lower().lstrip("."),
        )
    ]
