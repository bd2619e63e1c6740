"""Real WM-811K maps: loading the shared npz format and the fixed split.

Why a fixed split in code: every reported number must be on maps the model
never saw, and the same maps every time. ``wm811k_train.npz`` is split by a
seeded stratified draw into *fit* (training) and *calib* (early stopping and
temperature fitting); ``wm811k_val.npz`` is never trained on and serves as the
held-out test set. The data stays in ``../shared/data``; nothing is copied
into git.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from ml.taxonomy import PATTERNS, pattern_index

#: Where the shared real data lives unless WAFERSTREAM_WM811K_DIR says otherwise.
DEFAULT_DATA_DIR: Final[Path] = Path(
    os.environ.get(
        "WAFERSTREAM_WM811K_DIR", str(Path(__file__).resolve().parents[2] / "shared/data/wm811k")
    )
)
TRAIN_FILE: Final[str] = "wm811k_train.npz"
TEST_FILE: Final[str] = "wm811k_val.npz"

#: Fraction of the train file held out for early stopping and calibration.
CALIB_FRACTION: Final[float] = 0.1
SPLIT_SEED: Final[int] = 20261121


@dataclass(frozen=True)
class WaferSet:
    """Wafer maps with one wafer-level label index (into PATTERNS) each."""

    maps: list[np.ndarray]
    labels: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.maps)

    def subset(self, idx: np.ndarray) -> WaferSet:
        """Return the maps at ``idx`` (views, no copy of the dies)."""
        return WaferSet([self.maps[i] for i in idx], self.labels[idx])


def label_index(name: str) -> int:
    """Map a WM-811K label (``None`` for no pattern) to a PATTERNS index."""
    return 0 if name.lower() == "none" else pattern_index(name)


def load_npz(path: str | Path, limit: int | None = None) -> WaferSet:
    """Load a wm811k-format npz (dies/shapes/offsets/pattern) into a WaferSet."""
    with np.load(path, allow_pickle=False) as z:
        dies, shapes, offsets = z["dies"], z["shapes"], z["offsets"]
        names = z["pattern"]
    n = len(shapes) if limit is None else min(limit, len(shapes))
    maps = [dies[offsets[i] : offsets[i + 1]].reshape(shapes[i]) for i in range(n)]
    labels = np.array([label_index(str(s)) for s in names[:n]], dtype=np.int64)
    return WaferSet(maps, labels)


def save_npz(path: str | Path, ws: WaferSet) -> None:
    """Write a WaferSet in the wm811k npz format (used for small test fixtures)."""
    shapes = np.array([m.shape for m in ws.maps], dtype=np.int32).reshape(-1, 2)
    offsets = np.concatenate([[0], np.cumsum([m.size for m in ws.maps])]).astype(np.int64)
    dies = np.concatenate([m.ravel() for m in ws.maps]).astype(np.uint8)
    names = np.array(["None" if k == 0 else PATTERNS[k] for k in ws.labels])
    np.savez_compressed(path, dies=dies, shapes=shapes, offsets=offsets, pattern=names)


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Return (keep, held) index arrays holding ``fraction`` of every class out."""
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        held.append(idx[: max(1, int(round(len(idx) * fraction)))])
    held_idx = np.sort(np.concatenate(held))
    keep_idx = np.setdiff1d(np.arange(len(labels)), held_idx)
    return keep_idx, held_idx


def fit_calib_split(data_dir: Path = DEFAULT_DATA_DIR) -> tuple[WaferSet, WaferSet]:
    """Return the fixed (fit, calib) split of the real training file."""
    ws = load_npz(data_dir / TRAIN_FILE)
    keep, held = stratified_split(ws.labels, CALIB_FRACTION)
    return ws.subset(keep), ws.subset(held)


def load_die_map(path: str | Path, index: int = 0) -> np.ndarray:
    """Read one die grid from ``.npy``, ``.npz`` (wm811k format or first array) or PNG.

    PNG grey levels follow WM-811K's original coding (0 no die, ~128 pass,
    ~255 fail); PNGs that already hold 0/1/2 are taken as they are.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        grid = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "offsets" in z:
                o, s = z["offsets"], z["shapes"]
                grid = z["dies"][o[index] : o[index + 1]].reshape(s[index])
            else:
                grid = z[z.files[0]]
    elif suffix == ".png":
        from PIL import Image

        grid = np.asarray(Image.open(path).convert("L"))
        if grid.max() > 2:
            grid = np.digitize(grid, [64, 192]).astype(np.uint8)
    else:
        raise ValueError(f"unsupported die-map file {path} (use .npy, .npz or .png)")
    grid = np.asarray(grid)
    if grid.ndim != 2 or grid.max(initial=0) > 2:
        raise ValueError(f"{path}: expected a 2-D die grid with codes 0/1/2")
    return grid.astype(np.uint8)
