"""Pure-numpy metrics shared by training (validation), evaluation and calibration.

Why separate from the evaluation driver: training computes the same macro-F1
it is later judged by, without importing onnxruntime, and evaluation computes
it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.taxonomy import PATTERNS


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int = len(PATTERNS)) -> np.ndarray:
    """Confusion matrix, rows = true label, columns = predicted label."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def per_class(cm: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per PATTERNS name from a confusion matrix."""
    tp = np.diag(cm).astype(float)
    pred = cm.sum(0).astype(float)
    true = cm.sum(1).astype(float)
    prec = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    rec = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
    return {
        name: {
            "precision": float(prec[k]),
            "recall": float(rec[k]),
            "f1": float(f1[k]),
            "support": int(true[k]),
        }
        for k, name in enumerate(PATTERNS)
    }


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes that occur in the ground truth."""
    stats = per_class(cm)
    f1s = [s["f1"] for s in stats.values() if s["support"] > 0]
    return float(np.mean(f1s)) if f1s else 0.0


def expected_calibration_error(conf: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE of top-1 confidence: mean |accuracy - confidence| over equal-width bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(float(correct[sel].mean()) - float(conf[sel].mean()))
    return float(ece)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Numerically stable softmax along ``axis`` (die-mask logits -> class probabilities)."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """Temperature minimising multi-label binary cross-entropy (grid + refinement).

    One scalar for all classes: enough to fix the over-confidence that
    class-balanced sampling and long training cause, without over-fitting
    the small calibration split.
    """

    def nll(t: float) -> float:
        p = np.clip(sigmoid(logits / t), 1e-7, 1 - 1e-7)
        return float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())

    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 61))
    best = float(grid[np.argmin([nll(t) for t in grid])])
    fine = best * np.exp(np.linspace(-0.06, 0.06, 25))
    return float(fine[np.argmin([nll(t) for t in fine])])


def decision_macro_f1(logits: np.ndarray, labels: np.ndarray, offsets: np.ndarray | float = 0.0) -> float:
    """Macro-F1 of the top-1 decisions on ``logits + offsets``."""
    return macro_f1(confusion(labels, (logits + offsets).argmax(1), logits.shape[1]))


def fit_logit_offsets(
    logits: np.ndarray,
    labels: np.ndarray,
    grid: np.ndarray = np.arange(-2.0, 2.001, 0.25),
    rounds: int = 3,
    classes: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Per-class offsets added to wafer logits that maximise top-1 macro-F1 on ``labels``.

    Why: training draws real maps class-balanced (Near-full 43 maps, none
    10k), so the network's logits encode the *balanced* priors and over-call
    rare patterns on real traffic. Adding a per-class offset is the classic
    prior-shift correction; fitting it for macro-F1 (coordinate ascent over a
    coarse grid, a few rounds) sets the trade-off the model is judged by. The
    grid is coarse and bounded, and ties go to the smallest shift, so a small
    calibration split cannot push a rare class far on a handful of maps.
    ``classes`` limits the search to those columns (the others stay 0).
    """
    offsets = np.zeros(logits.shape[1])
    best = decision_macro_f1(logits, labels, offsets)
    for _ in range(rounds):
        changed = False
        for k in range(logits.shape[1]) if classes is None else classes:
            for g in sorted(grid, key=abs):
                trial = offsets.copy()
                trial[k] = g
                s = decision_macro_f1(logits, labels, trial)
                if s > best + 1e-9 or (abs(s - best) <= 1e-9 and abs(g) < abs(offsets[k])):
                    best, offsets, changed = s, trial, changed or g != offsets[k]
        if not changed:
            break
    return offsets


@dataclass(frozen=True)
class MaskOverlap:
    """Per map, the die confusion of two mask sets (rows true code, columns predicted).

    Why one table: the dataset-level IoU, the IoU of any subset of maps
    (single-pattern maps, mixtures), the per-map misses and the die
    confusion are all sums over it, so the masks are compared once.
    """

    per_map: np.ndarray  # (maps, codes, codes)

    @classmethod
    def of(
        cls, true_masks: list[np.ndarray], pred_masks: list[np.ndarray], n: int = len(PATTERNS)
    ) -> MaskOverlap:
        """Compare each true mask with its predicted one (same shape, codes below ``n``)."""
        per_map = np.zeros((len(true_masks), n, n), dtype=np.int64)
        for i, (t, p) in enumerate(zip(true_masks, pred_masks, strict=True)):
            pairs = t.ravel().astype(np.int64) * n + p.ravel()
            per_map[i] = np.bincount(pairs, minlength=n * n).reshape(n, n)
        return cls(per_map)

    @property
    def inter(self) -> np.ndarray:
        """(maps, codes): dies with that code in both masks."""
        return np.diagonal(self.per_map, axis1=1, axis2=2)

    @property
    def true_count(self) -> np.ndarray:
        """(maps, codes): dies with that code in the true mask."""
        return self.per_map.sum(2)

    @property
    def union(self) -> np.ndarray:
        """(maps, codes): dies with that code in either mask."""
        return self.true_count + self.per_map.sum(1) - self.inter

    def die_confusion(self) -> np.ndarray:
        """Die-level confusion over labelled dies, summed over maps.

        Both masks are non-zero exactly on failing dies, so leaving out the
        background-background cell counts every failing die once. Why report
        it: a mean IoU hides *where* a pattern's dies go (v9's Scratch dies
        went mostly to Random, not to another blob).
        """
        total = self.per_map.sum(0)
        total[0, 0] = 0
        return total

    def iou(self, maps: np.ndarray | list[int] | None = None) -> np.ndarray:
        """IoU per code with intersection and union summed over ``maps`` (all by default).

        NaN for a code that occurs in none of them.
        """
        rows = slice(None) if maps is None else np.asarray(maps, dtype=np.int64)
        pooled = MaskOverlap(self.per_map[rows].sum(0, keepdims=True))
        inter, union = pooled.inter[0], pooled.union[0]
        return np.divide(inter, union, out=np.full(len(inter), np.nan), where=union > 0)

    def missed(self, min_dies: int = 5, below: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """Per code: maps holding at least ``min_dies`` of it, and how many of those it is missed on.

        Missed = per-map IoU of that code under ``below``. Why: dataset-level
        IoU cannot tell a pattern found everywhere with ragged borders from
        one found perfectly on some wafers and not at all on others; the two
        need different fixes (v9 missed a quarter of its evaluation
        scratches outright). Code 0 (background) is never counted.
        """
        present = self.true_count >= min_dies
        present[:, 0] = False
        missed = present & (self.inter < below * self.union)
        return present.sum(0), missed.sum(0)
