"""The failure-pattern taxonomy: the one definition every part of waferstream reads.

Why data and not constants sprinkled around: the model's output channels, the
die-level mask codes, the Avro enum of pattern names, the alert rules and the
evaluation reports must all agree on the same ordered list. Changing it here
(and retraining) is the only way to change it.

The eight WM-811K failure patterns plus ``none`` (a wafer with no systematic
pattern). The product spec's names map onto them: edge -> Edge-Ring/Edge-Loc,
ring -> Donut, particle -> Loc.
"""

from __future__ import annotations

from typing import Final

#: Wafer-level labels, in model output order. Index 0 is "no pattern".
PATTERNS: Final[tuple[str, ...]] = (
    "none",
    "Center",
    "Donut",
    "Edge-Loc",
    "Edge-Ring",
    "Loc",
    "Near-full",
    "Random",
    "Scratch",
)

#: The eight defect patterns (everything but ``none``).
DEFECT_PATTERNS: Final[tuple[str, ...]] = PATTERNS[1:]

#: Die-level mask code for background (passing die, no die, or a failing die
#: that belongs to no pattern). Code ``k > 0`` means ``PATTERNS[k]``.
BACKGROUND: Final[int] = 0

#: Spec names used by fab engineers, mapped to taxonomy labels.
SPEC_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "center": ("Center",),
    "ring": ("Donut",),
    "donut": ("Donut",),
    "edge": ("Edge-Ring", "Edge-Loc"),
    "scratch": ("Scratch",),
    "particle": ("Loc",),
    "local": ("Loc",),
    "random": ("Random",),
    "near-full": ("Near-full",),
}

#: Systematic patterns: a tool or process cause is likely, so repeated
#: occurrences within a lot indicate an excursion. Random and none are not.
SYSTEMATIC_PATTERNS: Final[frozenset[str]] = frozenset(
    {"Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Near-full", "Scratch"}
)


def pattern_index(name: str) -> int:
    """Return the output/mask index of a pattern name, raising on unknown names."""
    try:
        return PATTERNS.index(name)
    except ValueError:
        raise ValueError(f"unknown pattern {name!r}; expected one of {PATTERNS}") from None
