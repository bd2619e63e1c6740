"""Generator invariants: masks only on failing dies, every fail labelled, seeds reproducible."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ml.synth
from ml.evaluate import SYNTH_EVAL_MAPS
from ml.synth import (
    MIXABLE,
    PRECEDENCE,
    RANDOM,
    REGION_PATTERNS,
    SYNTH_EVAL_SEED,
    evaluation_maps,
    generate,
    generate_many,
    wafer_target,
)
from ml.serving import MODELS_DIR
from ml.taxonomy import DEFECT_PATTERNS, PATTERNS, pattern_index


@pytest.mark.parametrize("index", range(40))
def test_masks_live_exactly_on_failing_dies(index: int) -> None:
    m = generate(11, index)
    assert m.dies.shape == m.die_labels.shape
    assert set(np.unique(m.dies)) <= {0, 1, 2}
    fail = m.dies == 2
    assert not m.die_labels[~fail].any(), "labels on passing or missing dies"
    assert (m.die_labels[fail] > 0).all(), "a failing die without a code"
    assert len(m.patterns) <= 4 and len(set(m.patterns)) == len(m.patterns)


@pytest.mark.parametrize("name", [p for p in DEFECT_PATTERNS if p != "Random"])
def test_forced_pattern_paints_its_code(name: str) -> None:
    hits = sum(
        bool((generate(3, i, patterns=(name,)).die_labels == pattern_index(name)).any())
        for i in range(10)
    )
    assert hits >= 8
    assert wafer_target((name,))[pattern_index(name)] == 1.0


def test_none_wafers_only_carry_random_fails() -> None:
    m = generate(3, 0, patterns=())
    assert set(np.unique(m.die_labels[m.dies == 2])) <= {RANDOM}
    assert wafer_target(())[0] == 1.0


def test_same_seed_same_map_and_different_seed_differs() -> None:
    a, b, c = generate(7, 5), generate(7, 5), generate(8, 5)
    assert np.array_equal(a.dies, b.dies) and np.array_equal(a.die_labels, b.die_labels)
    assert a.patterns == b.patterns
    assert a.dies.shape != c.dies.shape or not np.array_equal(a.dies, c.dies)


@pytest.mark.parametrize("order", [("Center", "Scratch"), ("Scratch", "Center")])
def test_overlaps_take_the_later_pattern_in_precedence_whatever_the_painting_order(
    order: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two patterns painted over the same whole-wafer region: every fail takes the top one."""
    for name in order:
        monkeypatch.setitem(ml.synth.PAINTERS, name, lambda g, rng: (g.on.copy(), 1.0))
    m = generate(3, 0, patterns=order)
    top = max(order, key=PRECEDENCE.index)
    assert top == "Scratch"
    assert set(np.unique(m.die_labels[m.dies == 2])) == {pattern_index(top)}


def test_overlap_marks_dies_inside_two_pattern_regions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overlap: two painted regions cover the die; Random, a density regime, covers none."""
    half = {"Center": lambda g: g.x < 0.2, "Scratch": lambda g: g.x > -0.2}
    for name, side in half.items():
        monkeypatch.setitem(ml.synth.PAINTERS, name, lambda g, rng, side=side: (side(g), 1.0))
    m = generate(3, 0, patterns=("Center", "Scratch"))
    on = m.dies > 0
    cols = (np.arange(m.dies.shape[1]) + 0.5 - m.dies.shape[1] / 2) / (m.dies.shape[1] / 2)
    both = np.broadcast_to((cols > -0.2) & (cols < 0.2), m.dies.shape)
    assert m.overlap.any() and np.array_equal(m.overlap, both & on)
    assert set(np.unique(m.die_labels[m.overlap])) == {pattern_index("Scratch")}
    assert not generate(3, 0, patterns=("Random", "Center")).overlap.any()
    assert not generate(3, 0, patterns=("Scratch",)).overlap.any()


@pytest.mark.parametrize("index", range(40))
def test_die_labels_follow_from_the_region_bits_by_precedence(index: int) -> None:
    """The region target and the die labels are one ground truth, not two."""
    m = generate(11, index)
    assert m.regions.dtype == np.uint8 and m.regions.shape == m.dies.shape
    assert not m.regions[m.dies == 0].any(), "a region bit off the wafer"
    top = np.full(m.dies.shape, RANDOM)
    for j, name in enumerate(REGION_PATTERNS):
        top = np.where((m.regions >> j) & 1, pattern_index(name), top)
    fail = m.dies == 2
    assert np.array_equal(m.die_labels[fail], top[fail])
    painted = {name for j, name in enumerate(REGION_PATTERNS) if ((m.regions >> j) & 1).any()}
    assert painted <= set(m.patterns)
    assert np.array_equal(m.overlap, np.unpackbits(m.regions[..., None], axis=-1).sum(-1) >= 2)


def test_pattern_count_distribution_is_a_parameter() -> None:
    """Training may ask for more mixtures than the evaluation maps hold."""
    mixtures_only = generate_many(5, 60, n_patterns_p=(0.0, 0.0, 0.5, 0.3, 0.2))
    assert all(2 <= len(m.patterns) <= 4 and set(m.patterns) <= set(MIXABLE) for m in mixtures_only)
    default = generate_many(5, 60)
    assert [m.patterns for m in default] == [generate(5, i).patterns for i in range(60)]
    assert sum(len(m.patterns) <= 1 for m in default) > 30  # N_PATTERNS_P: 70 % none or single


def test_the_shipped_synthetic_report_describes_todays_evaluation_maps() -> None:
    """The model card's die-level IoU holds only for the maps it was measured on.

    Any change to the generator's default stream (a new parameter, a
    reordered draw) silently changes those maps and makes the shipped IoU
    incomparable with the next model's. The report's die confusion rows
    sum to the true die count per code, a fingerprint of every map.
    """
    report = json.loads((MODELS_DIR / "eval_synthetic.json").read_text())
    maps = evaluation_maps(int(report["maps"]))
    assert report["seed"] == SYNTH_EVAL_SEED and report["maps"] == SYNTH_EVAL_MAPS
    assert report["maps_single"] == sum(len(m.patterns) == 1 for m in maps)
    assert report["maps_mixture"] == sum(len(m.patterns) > 1 for m in maps)
    true_dies = np.bincount(np.concatenate([m.die_labels.ravel() for m in maps]), minlength=len(PATTERNS))
    assert np.array(report["die_confusion"]).sum(1)[1:].tolist() == true_dies[1:].tolist()
    assert report["overlap_dies"] == sum(int((m.overlap & (m.dies == 2)).sum()) for m in maps)
