"""Training samples and bucketed batches: augmentation, encoding, targets.

Why hand-rolled batching instead of a DataLoader: maps of one batch must share
a bucket (one input size), the data is tiny and already in memory, and on a
2-core machine worker processes only steal cores from the forward pass.

A sample is a die grid plus a wafer-level target and, for synthetic maps, a
die-level mask and the pattern regions (``None`` for real maps, whose masks
are unknown).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import albumentations as A
import cv2
import numpy as np
import torch

from ml.buckets import IN_CHANNELS, encode, place, to_bucket
from ml.synth import RANDOM, REGION_PATTERNS

#: Mask value for pixels without a die-level target (real maps).
IGNORE: int = 255


@dataclass(frozen=True)
class Sample:
    """One training map: dies (uint8), wafer target (multi-hot), optional die mask and regions."""

    dies: np.ndarray
    target: np.ndarray
    mask: np.ndarray | None
    #: ``SynthMap.regions`` bits; present exactly when ``mask`` is.
    regions: np.ndarray | None = None


class Batch(NamedTuple):
    """One bucket's worth of samples as tensors."""

    x: torch.Tensor  # (N, C, S, S) float input planes
    target: torch.Tensor  # (N, 9) multi-hot wafer targets
    mask: torch.Tensor  # (N, S, S) int64 die codes, IGNORE on real maps
    has_mask: torch.Tensor  # (N,) bool: synthetic maps
    regions: torch.Tensor  # (N, len(REGION_PATTERNS), S, S) float 0/1, zero on real maps


def build_augment(seed: int = 0) -> A.Compose:
    """Label-preserving geometry: every WM-811K pattern is invariant to these.

    Nearest-neighbour everywhere so die codes stay in {0, 1, 2} and masks
    stay aligned with the dies they label; borders fill with "no die".

    Seeded, because albumentations draws from its own generator, which is
    otherwise seeded from the OS: two runs of the same command saw different
    augmentations whatever ``TrainConfig.seed`` said. Training reseeds it
    every epoch (``set_random_seed``), so a resumed run draws what an
    uninterrupted one would.
    """
    nearest = {"interpolation": cv2.INTER_NEAREST, "mask_interpolation": cv2.INTER_NEAREST}
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Rotate(limit=15, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.3, **nearest),
            A.GridDistortion(
                num_steps=5, distort_limit=0.15, border_mode=cv2.BORDER_CONSTANT, p=0.2, **nearest
            ),
        ],
        seed=seed,
    )


def fail_noise(
    dies: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, max_rate: float = 0.02
) -> tuple[np.ndarray, np.ndarray | None]:
    """Flip a few passing dies to failing (isolated fails, so labelled Random).

    Real yields vary lot to lot; this keeps the model from keying on the
    exact background fail density.
    """
    flip = (dies == 1) & (rng.random(dies.shape) < rng.uniform(0.0, max_rate))
    dies = np.where(flip, np.uint8(2), dies)
    if mask is not None:
        mask = np.where(flip, np.uint8(RANDOM), mask)
    return dies, mask


def augment(
    s: Sample, aug: A.Compose, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Apply geometry + fail-noise to a sample; masks stay zero off failing dies.

    The regions move with the dies; fail-noise leaves them alone, since an
    isolated extra fail changes no pattern's extent.
    """
    if s.mask is None or s.regions is None:
        dies, _ = fail_noise(np.ascontiguousarray(aug(image=s.dies)["image"]), None, rng)
        return dies, None, None
    out = aug(image=s.dies, masks=[s.mask, s.regions])
    mask, regions = out["masks"]
    dies, mask = fail_noise(np.ascontiguousarray(out["image"]), mask, rng)
    return dies, np.where(dies == 2, mask, np.uint8(0)), np.asarray(regions, np.uint8)


def region_planes(bits: np.ndarray) -> np.ndarray:
    """``(..., S, S)`` region bits -> ``(..., len(REGION_PATTERNS), S, S)`` float32 0/1 planes."""
    planes = np.unpackbits(bits[..., None, :, :], axis=-3, count=len(REGION_PATTERNS), bitorder="little")
    return planes.astype(np.float32)


def iter_batches(
    samples: Sequence[Sample],
    batch_size: int,
    rng: np.random.Generator,
    aug: A.Compose | None,
    channels: int = IN_CHANNELS,
) -> Iterator[Batch]:
    """Yield batches, one bucket per batch, shuffled.

    Augmentation runs before bucketing (90-degree rotations can change the
    grid's shape, hence its bucket); the bucket is chosen from the original
    shape's longest side, which rotation preserves.
    """
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(place(s.dies.shape).bucket, []).append(i)
    chunks: list[np.ndarray] = []
    for idx in groups.values():
        perm = rng.permutation(np.array(idx))
        chunks.extend(perm[j : j + batch_size] for j in range(0, len(perm), batch_size))
    for c in rng.permutation(len(chunks)):
        xs, ms, ts, hs, rs = [], [], [], [], []
        for i in chunks[c]:
            s = samples[int(i)]
            dies, mask, regions = augment(s, aug, rng) if aug is not None else (s.dies, s.mask, s.regions)
            p = place(dies.shape)
            xs.append(to_bucket(encode(dies, channels), p))
            m = np.full(dies.shape, IGNORE, np.uint8) if mask is None else mask
            ms.append(to_bucket(m[None], p)[0])
            r = np.zeros(dies.shape, np.uint8) if regions is None else regions
            rs.append(to_bucket(r[None], p)[0])
            ts.append(s.target)
            hs.append(mask is not None)
        yield Batch(
            torch.from_numpy(np.stack(xs)),
            torch.from_numpy(np.stack(ts)),
            torch.from_numpy(np.stack(ms).astype(np.int64)),
            torch.tensor(hs),
            torch.from_numpy(region_planes(np.stack(rs))),
        )
