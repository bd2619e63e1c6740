"""Decision metrics (prior-shift offsets fitted for macro-F1) and die-level mask metrics."""

from __future__ import annotations

import numpy as np

from ml.metrics import MaskOverlap, confusion, fit_logit_offsets, macro_f1


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
    offsets, gain, scope = generalising_offsets(shifted, labels)
    assert gain > 0.05 and offsets[2] > 0 and scope == "all"
    # Pure noise: whatever offsets fit one half cannot help the other.
    noise = rng.normal(0.0, 1.0, (3000, 9))
    offsets, gain, scope = generalising_offsets(noise, labels)
    assert gain <= 0 and not offsets.any() and scope == "dropped"


def test_the_none_offset_survives_when_the_rare_class_offsets_do_not_generalise() -> None:
    """Clean maps under-called (the prior shift), rare classes only noise: keep ``none``'s offset alone."""
    from ml.evaluate import generalising_offsets

    rng = np.random.default_rng(2)
    labels = np.where(rng.random(3000) < 0.6, 0, rng.integers(1, 9, 3000))
    logits = rng.normal(0.0, 1.0, (3000, 9))
    logits[labels == 0, 0] += 3.0
    logits[:, 0] -= 3.0
    offsets, gain, scope = generalising_offsets(logits, labels)
    assert scope == "none only" and gain > 0.02
    assert offsets[0] > 0 and not offsets[1:].any()


def _scratch_maps() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Three 6x6 maps with a 6-die scratch (code 8) and two random fails (code 7).

    Map 0: found. Map 1: scratch called Random. Map 2: only 4 scratch dies, all found.
    """
    truth, pred = [], []
    for k in range(3):
        t = np.zeros((6, 6), np.uint8)
        t[2, :] = 8
        t[5, 0] = t[5, 5] = 7
        if k == 2:
            t[2, 4:] = 0
        p = t.copy()
        if k == 1:
            p[p == 8] = 7
        truth.append(t)
        pred.append(p)
    return truth, pred


def test_die_confusion_counts_every_failing_die_once_where_it_went() -> None:
    truth, pred = _scratch_maps()
    cm = MaskOverlap.of(truth, pred).die_confusion()
    assert cm.sum() == sum(int(np.count_nonzero(t)) for t in truth) == 22
    assert cm[8, 8] == 10 and cm[8, 7] == 6 and cm[7, 7] == 6
    assert cm[0].sum() == cm[:, 0].sum() == 0  # pass dies are not counted


def test_missed_instances_counts_wafers_where_a_pattern_was_not_found() -> None:
    truth, pred = _scratch_maps()
    present, missed = MaskOverlap.of(truth, pred).missed()
    assert present[8] == 2 and missed[8] == 1  # map 2 has fewer than 5 scratch dies
    assert present[7] == 0  # two random fails per map are below min_dies
    present, missed = MaskOverlap.of(truth, pred).missed(min_dies=2)
    assert present[7] == 3 and missed[7] == 0


def test_iou_sums_intersection_and_union_over_the_chosen_maps() -> None:
    truth, pred = _scratch_maps()
    overlap = MaskOverlap.of(truth, pred)
    iou = overlap.iou()
    # Scratch: 16 true dies, 10 predicted, all 10 right; Random: 6 true, 12 predicted.
    assert iou[8] == 10 / 16 and iou[7] == 6 / 12
    assert np.isnan(iou[1])  # Center occurs on no map
    assert overlap.iou([0, 2])[8] == overlap.iou([0, 2])[7] == 1.0
    assert overlap.iou([1])[8] == 0.0
