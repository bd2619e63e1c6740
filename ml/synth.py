"""Synthetic wafer maps with die-level ground truth.

Why synthetic: WM-811K labels whole wafers only, so a die-level segmentation
model needs masks from somewhere. The generator draws round wafers on die
grids sized like WM-811K's (log-normal around ~33 dies across, 15-300 range,
rectangular dies), removes an edge-exclusion ring, sprinkles background fails
at realistic yields, and paints 0-4 parameterised patterns on top.

Labelling rule (the die-level target): every failing die gets a non-zero code.
A failing die inside a pattern's region gets that pattern's code (where
regions overlap, the pattern later in ``PRECEDENCE`` wins); every other
failing die is an isolated fail and gets ``Random``. Passing dies and
off-wafer positions are 0.

Where two regions overlap, the label is a convention, not something the map
shows: a die there fails with either pattern's density, so a scratch
through a dense centre blob leaves no trace inside the blob. ``SynthMap.overlap``
marks those dies so an evaluation can say how much of its error lies there.

Everything is driven by one ``numpy.random.Generator`` seeded per map, so map
``i`` of seed ``s`` is the same on every machine and in every order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from ml.taxonomy import DEFECT_PATTERNS, PATTERNS, pattern_index

RANDOM: Final[int] = pattern_index("Random")
NEAR_FULL: Final[int] = pattern_index("Near-full")

#: Seed streams, disjoint so that no map is in two of them: training draws
#: from 1, validation (during training, and the ship step's choice of
#: test-time views) from 2, the evaluation the model card reports from 3.
SYNTH_TRAIN_SEED: Final[int] = 1
SYNTH_VAL_SEED: Final[int] = 2
SYNTH_EVAL_SEED: Final[int] = 3

#: Probability of a map with 0, 1, 2, 3, 4 patterns.
N_PATTERNS_P: Final[tuple[float, ...]] = (0.15, 0.55, 0.2, 0.07, 0.03)

#: Patterns that can be part of a mixture. Near-full covers the whole wafer
#: and Random is a density regime, so both only occur alone.
MIXABLE: Final[tuple[str, ...]] = ("Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Scratch")

#: Label order where pattern regions overlap, lowest first: a die in two
#: regions takes the later one. Why fixed: labels used to follow the random
#: painting order, so the same overlap was Center on one map and Scratch on
#: the next, which no model can learn. Thin and small patterns go on top, so
#: a scratch through a centre blob stays one scratch, as FA reads it.
PRECEDENCE: Final[tuple[str, ...]] = (
    "Near-full", "Random", "Edge-Ring", "Edge-Loc", "Donut", "Center", "Loc", "Scratch",
)

#: The patterns that paint a region (all but Random), in ``PRECEDENCE``
#: order: bit ``j`` of ``SynthMap.regions`` is ``REGION_PATTERNS[j]``.
REGION_PATTERNS: Final[tuple[str, ...]] = tuple(p for p in PRECEDENCE if p != "Random")


@dataclass(frozen=True)
class SynthMap:
    """One synthetic wafer: die grid, die-level codes and the wafer-level label set."""

    dies: np.ndarray  # uint8 (rows, cols): 0 no die, 1 pass, 2 fail
    die_labels: np.ndarray  # uint8 (rows, cols): 0 background, k = PATTERNS[k]
    patterns: tuple[str, ...]  # defect patterns present; empty means "none"
    #: uint8 (rows, cols): bit ``j`` set on every on-wafer die, failing or
    #: not, inside the region of ``REGION_PATTERNS[j]``. The die labels
    #: follow from it: a failing die takes its highest set bit's pattern,
    #: or Random if none is set.
    regions: np.ndarray

    @property
    def overlap(self) -> np.ndarray:
        """bool (rows, cols): on-wafer dies, failing or not, inside two or more
        pattern regions (Random, a density regime, has no region)."""
        return np.unpackbits(self.regions[..., None], axis=-1).sum(-1) >= 2


@dataclass(frozen=True)
class _Geom:
    """Normalised wafer coordinates: y, x in units of wafer radius, r, angle."""

    y: np.ndarray
    x: np.ndarray
    r: np.ndarray
    theta: np.ndarray
    on: np.ndarray


def _grid(rng: np.random.Generator) -> tuple[np.ndarray, _Geom]:
    """Draw a die grid: log-normal size, rectangular dies, edge exclusion."""
    side = int(np.clip(np.round(np.exp(rng.normal(np.log(32.0), 0.3))), 15, 300))
    aspect = float(np.exp(rng.normal(0.0, 0.15)))
    rows = max(8, int(round(side * min(aspect, 1.0))))
    cols = max(8, int(round(side / max(aspect, 1.0))))
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    y = (yy + 0.5 - rows / 2) / (rows / 2)
    x = (xx + 0.5 - cols / 2) / (cols / 2)
    r = np.sqrt(x**2 + y**2)
    # Edge exclusion: about one die ring (0.5-1.5 dies) of the circle is unusable.
    excl = rng.uniform(0.5, 1.5) / (max(rows, cols) / 2)
    on = r <= 1.0 - excl
    dies = np.where(on, 1, 0).astype(np.uint8)
    return dies, _Geom(y, x, r / (1.0 - excl), np.arctan2(y, x), on)


def _angle_dist(theta: np.ndarray, centre: float) -> np.ndarray:
    """Absolute angular distance in radians, wrapped to [0, pi]."""
    return np.abs((theta - centre + np.pi) % (2 * np.pi) - np.pi)


def _center(g: _Geom, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    cy, cx = rng.uniform(-0.1, 0.1, 2)
    rad = rng.uniform(0.2, 0.5)
    d = np.sqrt((g.y - cy) ** 2 + (g.x - cx) ** 2)
    return d <= rad, rng.uniform(0.55, 0.95)


def _donut(g: _Geom, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    inner = rng.uniform(0.2, 0.5)
    width = rng.uniform(0.12, 0.3)
    region = (g.r >= inner) & (g.r <= inner + width)
    if rng.random() < 0.3:  # partial donut: an arc of at least 240 degrees
        region &= _angle_dist(g.theta, rng.uniform(-np.pi, np.pi)) <= rng.uniform(2.1, np.pi)
    return region, rng.uniform(0.5, 0.9)


def _edge_loc(g: _Geom, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    width = rng.uniform(0.1, 0.3)
    half_arc = np.deg2rad(rng.uniform(10, 50))
    region = (g.r >= 1.0 - width) & (_angle_dist(g.theta, rng.uniform(-np.pi, np.pi)) <= half_arc)
    return region, rng.uniform(0.55, 0.95)


def _edge_ring(g: _Geom, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    width = rng.uniform(0.03, 0.1)
    region = g.r >= 1.0 - width
    if rng.random() < 0.3:  # a ring with a gap, still most of the circumference
        region &= _angle_dist(g.theta, rng.uniform(-np.pi, np.pi)) <= np.deg2rad(
            rng.uniform(130, 180)
        )
    return region, rng.uniform(0.6, 0.98)


def _loc(g: _Geom, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    # Semi-axes 0.1-0.3 R: with 0.07-0.2 R a blob averaged 3.8 dies on grids
    # under 25 dies across, and synthetic Loc maps failed less than real ones
    # (median fail fraction 0.115 against 0.142).
    ry, rx = rng.uniform(0.1, 0.3, 2)
    # Keep the blob clear of the centre and of the edge band, so a Loc is not
    # an off-centre Center or an Edge-Loc by construction.
    dist = rng.uniform(0.25 + max(ry, rx), 0.85 - max(ry, rx))
    ang = rng.uniform(-np.pi, np.pi)
    cy, cx = dist * np.sin(ang), dist * np.cos(ang)
    rot = rng.uniform(0, np.pi)
    dy, dx = g.y - cy, g.x - cx
    u = dy * np.cos(rot) + dx * np.sin(rot)
    v = -dy * np.sin(rot) + dx * np.cos(rot)
    return (u / ry) ** 2 + (v / rx) ** 2 <= 1.0, rng.uniform(0.5, 0.9)


def _near_full(g: _Geom, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    return g.on.copy(), rng.uniform(0.75, 0.98)


def _random(g: _Geom, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    return g.on.copy(), rng.uniform(0.25, 0.6)


def _scratch(g: _Geom, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A polyline of 2-4 segments with small turns, 1-2 dies wide."""
    die = 2.0 / max(g.on.shape)  # one die in normalised units
    width = die * rng.uniform(0.55, 1.1)
    pt = rng.uniform(-0.6, 0.6, 2)
    heading = rng.uniform(-np.pi, np.pi)
    region = np.zeros(g.on.shape, dtype=bool)
    for _ in range(int(rng.integers(2, 5))):
        length = rng.uniform(0.15, 0.45)
        end = pt + length * np.array([np.sin(heading), np.cos(heading)])
        seg = end - pt
        t = np.clip(((g.y - pt[0]) * seg[0] + (g.x - pt[1]) * seg[1]) / (seg @ seg), 0.0, 1.0)
        d = np.sqrt((g.y - pt[0] - t * seg[0]) ** 2 + (g.x - pt[1] - t * seg[1]) ** 2)
        region |= d <= width
        pt = end
        heading += rng.uniform(-0.5, 0.5)
    return region, rng.uniform(0.7, 1.0)


#: Region painter per pattern: returns (region mask, fail density inside it).
PAINTERS: Final[dict[str, Callable[[_Geom, np.random.Generator], tuple[np.ndarray, float]]]] = {
    "Center": _center,
    "Donut": _donut,
    "Edge-Loc": _edge_loc,
    "Edge-Ring": _edge_ring,
    "Loc": _loc,
    "Near-full": _near_full,
    "Random": _random,
    "Scratch": _scratch,
}
assert tuple(sorted(PAINTERS)) == tuple(sorted(DEFECT_PATTERNS)) == tuple(sorted(PRECEDENCE))


def _choose_patterns(
    rng: np.random.Generator, weights: np.ndarray | None, n_patterns_p: tuple[float, ...]
) -> tuple[str, ...]:
    """Draw a pattern set: size by ``n_patterns_p``, singles by ``weights``, mixtures of MIXABLE."""
    n = int(rng.choice(len(n_patterns_p), p=n_patterns_p))
    if n == 0:
        return ()
    if n == 1:
        p = None if weights is None else weights / weights.sum()
        return (str(rng.choice(DEFECT_PATTERNS, p=p)),)
    return tuple(str(s) for s in rng.choice(MIXABLE, size=n, replace=False))


def generate(
    seed: int,
    index: int,
    patterns: tuple[str, ...] | None = None,
    weights: np.ndarray | None = None,
    n_patterns_p: tuple[float, ...] = N_PATTERNS_P,
) -> SynthMap:
    """Generate map ``index`` of the stream ``seed`` (reproducible, order-independent).

    ``patterns`` forces a pattern set (``()`` = none); otherwise it is drawn:
    0-4 patterns with probabilities ``n_patterns_p`` (training may ask for
    more mixtures than the evaluation maps hold), single patterns weighted by
    ``weights`` over DEFECT_PATTERNS.
    """
    rng = np.random.default_rng([seed, index])
    dies, g = _grid(rng)
    chosen = _choose_patterns(rng, weights, n_patterns_p) if patterns is None else tuple(patterns)
    labels = np.zeros(dies.shape, dtype=np.uint8)
    # Background yield loss: log-normal fail rate, median ~10%, like WM-811K "none".
    bg_rate = float(np.clip(np.exp(rng.normal(np.log(0.10), 0.5)), 0.005, 0.3))
    fail = g.on & (rng.random(dies.shape) < bg_rate)
    regions: dict[str, np.ndarray] = {}
    for name in chosen:
        region, density = PAINTERS[name](g, rng)
        region &= g.on
        fail |= region & (rng.random(dies.shape) < density)
        regions[name] = region
    # Random is a density regime over the whole wafer, not a region a die can be "in":
    # its fails keep the Random code below and it overlaps nothing.
    shaped = {name: regions[name] for name in sorted(regions, key=PRECEDENCE.index) if name != "Random"}
    for name, region in shaped.items():
        labels[region] = pattern_index(name)
    bits = np.zeros(dies.shape, dtype=np.uint8)
    for name, region in shaped.items():
        bits |= region.astype(np.uint8) << np.uint8(REGION_PATTERNS.index(name))
    dies[fail] = 2
    labels[~fail] = 0
    labels[fail & (labels == 0)] = RANDOM
    return SynthMap(dies=dies, die_labels=labels, patterns=chosen, regions=bits)


def generate_many(
    seed: int,
    n: int,
    start: int = 0,
    weights: np.ndarray | None = None,
    n_patterns_p: tuple[float, ...] = N_PATTERNS_P,
) -> list[SynthMap]:
    """Generate maps ``start .. start + n - 1`` of stream ``seed``."""
    return [
        generate(seed, i, weights=weights, n_patterns_p=n_patterns_p)
        for i in range(start, start + n)
    ]


def validation_maps(n: int) -> list[SynthMap]:
    """The first ``n`` synthetic validation maps (stream SYNTH_VAL_SEED: model selection, never reported)."""
    return generate_many(SYNTH_VAL_SEED, n)


def evaluation_maps(n: int) -> list[SynthMap]:
    """The first ``n`` synthetic evaluation maps (stream SYNTH_EVAL_SEED, never trained on)."""
    return generate_many(SYNTH_EVAL_SEED, n)


def wafer_target(patterns: tuple[str, ...]) -> np.ndarray:
    """Multi-hot float32 target over PATTERNS; ``none`` is set only for an empty set."""
    t = np.zeros(len(PATTERNS), dtype=np.float32)
    if not patterns:
        t[0] = 1.0
    for name in patterns:
        t[pattern_index(name)] = 1.0
    return t
