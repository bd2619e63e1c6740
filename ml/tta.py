"""Test-time augmentation: the model's outputs averaged over symmetric views of each map.

Why: every WM-811K pattern is invariant to the wafer's flips and quarter
turns (training augments with exactly these), but a trained network is not
exactly invariant, and where its views disagree (a short scratch beside a
blob, a Loc near the edge band) their average is right more often than any
one of them. The views are the eight symmetries of the square bucket,
applied to the bucketed input tensor and undone on the mask logits, so a
die's pixels line up with the original placement exactly, whatever the
grid's shape.

Torch-free (numpy only): serving wraps its onnxruntime forward pass with
``with_views``; how many views a shipped model uses is its card's
``tta_views``, decided at ship time by what they measured (``ml.cli``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import numpy as np

from ml.metrics import softmax

#: A forward pass: bucketed input batch -> (mask_logits, wafer_logits, embedding).
Forward = Callable[[np.ndarray], Sequence[np.ndarray]]

#: The symmetries of a square, as (quarter turns, then a horizontal flip),
#: in the order views are added: the identity, the two flips and the
#: half turn first (the four that keep a grid's rows as rows), then the rest.
VIEWS: Final[tuple[tuple[int, bool], ...]] = (
    (0, False), (0, True), (2, True), (2, False), (1, False), (1, True), (3, False), (3, True),
)


def apply_view(x: np.ndarray, view: tuple[int, bool]) -> np.ndarray:
    """``(N, C, S, S)`` -> the same batch seen through ``view``."""
    turns, flip = view
    out = np.rot90(x, turns, axes=(2, 3))
    return out[..., ::-1] if flip else out


def undo_view(y: np.ndarray, view: tuple[int, bool]) -> np.ndarray:
    """Inverse of ``apply_view`` for a ``(N, C, S, S)`` output."""
    turns, flip = view
    out = y[..., ::-1] if flip else y
    return np.rot90(out, -turns, axes=(2, 3))


def with_views(forward: Forward, views: int) -> Forward:
    """``forward`` run once over the first ``views`` of ``VIEWS`` of every map, outputs averaged.

    Die masks: the mean of the views' class probabilities, returned as its
    logarithm so that the caller's softmax gives that mean back. Wafer
    logits and embeddings: the views' mean (the card's temperature and
    offsets are fitted on what this returns). One call per batch: the
    views go through the graph as one batch of ``views * N`` maps.
    """
    if not 1 <= views <= len(VIEWS):
        raise ValueError(f"views must be 1..{len(VIEWS)}, got {views}")
    if views == 1:
        return forward
    chosen = VIEWS[:views]

    def run(x: np.ndarray) -> list[np.ndarray]:
        n = len(x)
        batch = np.ascontiguousarray(np.concatenate([apply_view(x, v) for v in chosen]))
        mask_logits, wafer_logits, embedding = forward(batch)
        probs = np.mean([softmax(undo_view(mask_logits[k * n:(k + 1) * n], v), 1)
                         for k, v in enumerate(chosen)], axis=0)
        mean = [a.reshape(views, n, *a.shape[1:]).mean(0) for a in (wafer_logits, embedding)]
        return [np.log(np.maximum(probs, 1e-12)).astype(np.float32), *mean]

    return run
