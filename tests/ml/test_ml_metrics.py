"""Decision metrics: the prior-shift offsets fitted for macro-F1."""

from __future__ import annotations

import numpy as np

from ml.metrics import confusion, fit_logit_offsets, macro_f1


def _logits(labels: np.ndarray, rng: np.random.Generator, n_classes: int = 9) -> np.ndarray:
    logits = rng.normal(0.0, 0.6, (len(labels), n_classes))
    logits[np.arange(len(labels)), labels] += 2.0
    return logits


def test_offsets_undo_a_class_bias_and_raise_macro_f1() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 9, 3000)
    logits = _logits(labels, rng)
    logits[:, 2] -= 2.0  # class 2 is under-called, as a rare class is after a prior shift
    before = macro_f1(confusion(labels, logits.argmax(1)))
    offsets = fit_logit_offsets(logits, labels)
    after = macro_f1(confusion(labels, (logits + offsets).argmax(1)))
    assert after > before + 0.05
    relative = offsets[2] - np.delete(offsets, 2).mean()
    assert 1.0 <= relative <= 3.0


def test_offsets_stay_zero_when_no_shift_helps() -> None:
    labels = np.repeat(np.arange(9), 20)
    logits = np.eye(9)[labels] * 5.0
    assert np.array_equal(fit_logit_offsets(logits, labels), np.zeros(9))


def test_offsets_are_kept_only_when_they_carry_over_to_unseen_maps() -> None:
    from ml.evaluate import generalising_offsets

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 9, 3000)
    shifted = _logits(labels, rng)
    shifted[:, 2] -= 2.0
    offsets, gain = generalising_offsets(shifted, labels)
    assert gain > 0.05 and offsets[2] > 0
    # Pure noise: whatever offsets fit one half cannot help the other.
    noise = rng.normal(0.0, 1.0, (3000, 9))
    offsets, gain = generalising_offsets(noise, labels)
    assert gain <= 0 and not offsets.any()
