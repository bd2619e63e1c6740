"""Resolution buckets: how a die grid of any shape becomes a model input and back.

Why buckets: WM-811K grids range from ~15 to ~300 dies across (median ~33).
One fixed input size either wastes compute on small maps or blurs dies on big
ones. Each map goes to the smallest bucket (square side, multiple of 32 as the
U-Net needs) that holds it and is stretched, nearest-neighbour, until its
longer side fills the bucket: every die becomes a block of ``floor`` or
``ceil`` of ``bucket / side`` pixels, so die boundaries stay exact, and every
wafer spans the whole input whatever its grid. Outputs are averaged back over
each die's block, so masks land on the original die grid exactly.

Why fill rather than an integer factor: with integer factors the median
33-die map stayed at one pixel per die in a 64-pixel input (half the span of
a 32-die map), so the encoder's stride-2 stem halved a one-die scratch away
at its first layer, and pattern sizes varied two-fold between neighbouring
grid sizes.

Torch-free on purpose: training and serving import the same code, so the
geometry can never drift between them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np

#: Square input sides; every side is a multiple of 32 (U-Net with 5 poolings).
BUCKETS: Final[tuple[int, ...]] = (64, 128, 256)

#: Input channels: on-wafer die, failing die, normalised radius from wafer
#: centre, line support and line anisotropy (see ``line_evidence``). The
#: radius channel tells the network where the edge is, which is what
#: separates Edge-Loc from Loc and Center from Donut.
#:
#: Channels are only ever appended, never changed or reordered: a model
#: trained on the first ``k`` channels reads ``encode(dies)[:k]`` (serving
#: takes ``k`` from the ONNX graph's input), so older models keep working.
IN_CHANNELS: Final[int] = 5

#: Length in dies of the oriented segments ``line_evidence`` averages over,
#: and how many orientations (evenly spaced over 180 degrees) it tries.
LINE_LENGTH: Final[int] = 7
LINE_ORIENTATIONS: Final[int] = 8


@dataclass(frozen=True)
class Placement:
    """Where a ``rows x cols`` die grid sits inside a square bucket.

    ``scale`` >= 1 stretches each die to a block of ``floor``/``ceil(scale)``
    pixels; ``stride`` > 1 (only for grids larger than the largest bucket)
    keeps every ``stride``-th die, the one case where die accuracy is given up.
    """

    bucket: int
    rows: int
    cols: int
    scale: float
    stride: int
    top: int
    left: int

    @property
    def kept(self) -> tuple[int, int]:
        """Rows and columns of the (strided) grid that is stretched into the bucket."""
        return math.ceil(self.rows / self.stride), math.ceil(self.cols / self.stride)


def place(shape: tuple[int, int], buckets: Sequence[int] = BUCKETS) -> Placement:
    """Return the placement of a die grid of ``shape`` in the smallest fitting bucket."""
    rows, cols = int(shape[0]), int(shape[1])
    if rows <= 0 or cols <= 0:
        raise ValueError(f"empty die grid {shape}")
    side = max(rows, cols)
    bucket = next((b for b in buckets if side <= b), buckets[-1])
    stride = math.ceil(side / bucket)
    scale = bucket / math.ceil(side / stride)
    h = len(_die_of_pixel(math.ceil(rows / stride), scale))
    w = len(_die_of_pixel(math.ceil(cols / stride), scale))
    return Placement(bucket, rows, cols, scale, stride, (bucket - h) // 2, (bucket - w) // 2)


def radius_map(dies: np.ndarray) -> np.ndarray:
    """Normalised elliptical distance of each die from the wafer centre (0 centre, ~1 edge).

    The ellipse is fitted to the on-wafer dies' bounding box, because die grids
    are often non-square (rectangular dies) while the wafer is round.
    """
    on = np.argwhere(dies > 0)
    rows, cols = dies.shape
    if len(on) == 0:
        return np.zeros(dies.shape, dtype=np.float32)
    (r0, c0), (r1, c1) = on.min(0), on.max(0)
    cy, cx = (r0 + r1) / 2.0, (c0 + c1) / 2.0
    ry, rx = max((r1 - r0 + 1) / 2.0, 0.5), max((c1 - c0 + 1) / 2.0, 0.5)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    return np.where(dies > 0, r, 0.0).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _line_kernels() -> tuple[np.ndarray, ...]:
    """Normalised ``LINE_LENGTH``-die segment kernels, one per orientation."""
    half = LINE_LENGTH // 2
    kernels = []
    for k in range(LINE_ORIENTATIONS):
        theta = np.pi * k / LINE_ORIENTATIONS
        kern = np.zeros((LINE_LENGTH, LINE_LENGTH), np.float32)
        for t in np.linspace(-half, half, 4 * LINE_LENGTH):
            kern[int(round(half + t * np.sin(theta))), int(round(half + t * np.cos(theta)))] = 1.0
        kernels.append(kern / kern.sum())
    return tuple(kernels)


def line_evidence(fail: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per failing die: the best oriented fail density through it, and how directional that is.

    Why hand it to the network: a one-die scratch is one pixel wide once a
    40-60-die map is stretched into the 64-pixel bucket, and the encoder's
    stride-2 stem starts by halving it; on the real calib split the clearest
    misses were long straight scratches called ``none``. Measured on the die
    grid itself, the fail density along the best of ``LINE_ORIENTATIONS``
    segments of ``LINE_LENGTH`` dies is high on a line even where it has gaps
    and low on isolated fails; its excess over the mean across orientations
    (anisotropy) is high on a line and low inside a blob, which separates
    Scratch from Loc. Both are zero off failing dies.
    """
    f = fail.astype(np.float32)
    resp = np.stack([cv2.filter2D(f, -1, k, borderType=cv2.BORDER_CONSTANT) for k in _line_kernels()])
    best = resp.max(0)
    return best * f, (best - resp.mean(0)) * f


def encode(dies: np.ndarray, channels: int = IN_CHANNELS) -> np.ndarray:
    """Return the first ``channels`` planes, ``(channels, rows, cols)`` float32, of a die grid's encoding."""
    if not 3 <= channels <= IN_CHANNELS:
        raise ValueError(f"a model reads 3 to {IN_CHANNELS} input channels, not {channels}")
    dies = np.asarray(dies)
    fail = dies == 2
    planes = [(dies > 0).astype(np.float32), fail.astype(np.float32), radius_map(dies)]
    if channels > 3:
        planes += line_evidence(fail)[: channels - 3]
    return np.stack(planes)


def to_bucket(planes: np.ndarray, p: Placement) -> np.ndarray:
    """Place ``(C, rows, cols)`` planes into a zero ``(C, bucket, bucket)`` canvas.

    Works for float inputs and integer masks alike (nearest-neighbour only).
    """
    kept_rows, kept_cols = p.kept
    x = planes[:, :: p.stride, :: p.stride]
    x = x.take(_die_of_pixel(kept_rows, p.scale), axis=1).take(_die_of_pixel(kept_cols, p.scale), axis=2)
    out = np.zeros((planes.shape[0], p.bucket, p.bucket), dtype=planes.dtype)
    out[:, p.top : p.top + x.shape[1], p.left : p.left + x.shape[2]] = x
    return out


def from_bucket(out: np.ndarray, p: Placement) -> np.ndarray:
    """Map ``(C, bucket, bucket)`` outputs back to ``(C, rows, cols)`` on the die grid.

    Each die's value is the mean over its block; for strided (oversized)
    grids each kept die's value is repeated over the skipped ones.
    """
    kept_rows, kept_cols = p.kept
    row_mean, col_mean = _block_mean(kept_rows, p.scale), _block_mean(kept_cols, p.scale)
    crop = out[:, p.top : p.top + row_mean.shape[1], p.left : p.left + col_mean.shape[1]]
    crop = row_mean @ crop @ col_mean.T
    if p.stride > 1:
        crop = crop.repeat(p.stride, axis=1).repeat(p.stride, axis=2)
    return crop[:, : p.rows, : p.cols]


@functools.lru_cache(maxsize=1024)
def _die_of_pixel(n: int, scale: float) -> np.ndarray:
    """Die index of every pixel along an axis of ``n`` dies stretched by ``scale``.

    Die ``i`` covers pixels ``floor(i * scale)`` up to ``floor((i + 1) * scale)``.
    Cached, like ``_block_mean``: a fab runs a handful of grid sizes.
    """
    starts = np.floor(np.arange(n + 1) * scale + 1e-9).astype(np.int64)
    die = np.repeat(np.arange(n), np.diff(starts))
    die.setflags(write=False)
    return die


@functools.lru_cache(maxsize=1024)
def _block_mean(n: int, scale: float) -> np.ndarray:
    """``(n, pixels)`` matrix averaging each die's pixel block (one matmul per axis)."""
    die = _die_of_pixel(n, scale)
    m = np.zeros((n, len(die)), dtype=np.float32)
    m[die, np.arange(len(die))] = 1.0 / np.bincount(die, minlength=n)[die]
    m.setflags(write=False)
    return m


def group_by_bucket(
    shapes: Sequence[tuple[int, int]], buckets: Sequence[int] = BUCKETS
) -> dict[int, list[int]]:
    """Group map indices by bucket side so each batch has one input size."""
    groups: dict[int, list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(place(shape, buckets).bucket, []).append(i)
    return groups
