"""Side-by-side statistics of real and synthetic maps per pattern (for docs/model.md).

Why: die-level masks come only from the generator, so the generator must
produce maps whose grid sizes and fail fractions resemble WM-811K's; this
prints the comparison as a Markdown table. ``python -m ml.realism``.
"""

from __future__ import annotations

import numpy as np

from ml.data import DEFAULT_DATA_DIR, TRAIN_FILE, load_npz
from ml.synth import generate
from ml.taxonomy import PATTERNS


def _fail_fraction(m: np.ndarray) -> float:
    return float((m == 2).sum() / max(1, (m > 0).sum()))


def _q(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return f"{p10:{fmt}} / {p50:{fmt}} / {p90:{fmt}}"


def comparison_table(synth_per_pattern: int = 300) -> str:
    """Markdown table: grid side and fail fraction (p10/p50/p90), real vs synthetic."""
    real = load_npz(DEFAULT_DATA_DIR / TRAIN_FILE)
    rows = [
        "| pattern | real n | real side p10/50/90 | synth side p10/50/90 "
        "| real fail frac p10/50/90 | synth fail frac p10/50/90 |",
        "|---|---:|---|---|---|---|",
    ]
    for k, name in enumerate(PATTERNS):
        maps = [real.maps[i] for i in np.flatnonzero(real.labels == k)]
        forced: tuple[str, ...] = () if k == 0 else (name,)
        synth = [generate(99, i, patterns=forced).dies for i in range(synth_per_pattern)]
        rows.append(
            f"| {name} | {len(maps)} "
            f"| {_q([float(max(m.shape)) for m in maps], '.0f')} "
            f"| {_q([float(max(m.shape)) for m in synth], '.0f')} "
            f"| {_q([_fail_fraction(m) for m in maps], '.3f')} "
            f"| {_q([_fail_fraction(m) for m in synth], '.3f')} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(comparison_table())
