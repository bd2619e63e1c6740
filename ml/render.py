"""Wafer-map rendering to PNG: the one picture used by the CLI and the alert e-mails.

Why numpy + Pillow only: the alert consumers render maps for every e-mail and
must stay light (no torch, no matplotlib). Keeping a single renderer means an
engineer sees the same colours in ``waferstream predict`` and in an alert.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Final

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ml.taxonomy import PATTERNS

#: RGBA per die state. Off-wafer positions are transparent so the map sits on
#: any e-mail background; pass/fail greys stay readable in print.
NO_DIE_RGBA: Final[tuple[int, int, int, int]] = (255, 255, 255, 0)
PASS_RGBA: Final[tuple[int, int, int, int]] = (215, 215, 215, 255)
FAIL_RGBA: Final[tuple[int, int, int, int]] = (90, 90, 90, 255)

#: Colour per pattern code (index into PATTERNS); index 0 ("none") is unused
#: because background dies keep their pass/fail grey. Colour-blind-friendly
#: (Okabe-Ito based) so patterns stay distinguishable for most readers.
PATTERN_RGB: Final[tuple[tuple[int, int, int], ...]] = (
    (0, 0, 0),  # none (never drawn)
    (213, 94, 0),  # Center: vermillion
    (204, 121, 167),  # Donut: reddish purple
    (0, 114, 178),  # Edge-Loc: blue
    (86, 180, 233),  # Edge-Ring: sky blue
    (230, 159, 0),  # Loc: orange
    (120, 28, 129),  # Near-full: purple
    (0, 158, 115),  # Random: bluish green
    (240, 228, 66),  # Scratch: yellow
)
assert len(PATTERN_RGB) == len(PATTERNS)

_TARGET_SIDE_PX: Final[int] = 320
_MARGIN_PX: Final[int] = 8
_LINE_PX: Final[int] = 14


def _die_image(dies: np.ndarray, die_labels: np.ndarray | None) -> np.ndarray:
    """Return an RGBA (rows, cols, 4) array, one pixel per die."""
    rgba = np.empty((*dies.shape, 4), dtype=np.uint8)
    rgba[:] = NO_DIE_RGBA
    rgba[dies == 1] = PASS_RGBA
    rgba[dies == 2] = FAIL_RGBA
    if die_labels is not None:
        for code in np.unique(die_labels):
            if code <= 0 or code >= len(PATTERNS):
                continue
            sel = (die_labels == code) & (dies == 2)
            rgba[sel] = (*PATTERN_RGB[int(code)], 255)
    return rgba


def render_wafer_png(
    dies: np.ndarray,
    die_labels: np.ndarray | None = None,
    title_lines: Sequence[str] = (),
    scale: int | None = None,
) -> bytes:
    """Render a die grid to PNG bytes with pattern colours, a legend and a title.

    ``dies`` holds 0 (no die), 1 (pass), 2 (fail). ``die_labels`` (same shape)
    holds pattern codes (k > 0 means ``PATTERNS[k]``); only failing dies are
    coloured, so a label on a passing die can never mislead the reader.
    ``scale`` is pixels per die; by default the map is scaled to about 320 px.
    """
    dies = np.asarray(dies)
    if dies.ndim != 2:
        raise ValueError(f"dies must be 2-D, got shape {dies.shape}")
    if die_labels is not None:
        die_labels = np.asarray(die_labels)
        if die_labels.shape != dies.shape:
            raise ValueError(f"die_labels shape {die_labels.shape} != dies shape {dies.shape}")
    rows, cols = dies.shape
    if scale is None:
        scale = max(1, _TARGET_SIDE_PX // max(rows, cols, 1))
    map_img = Image.fromarray(_die_image(dies, die_labels)).resize(
        (cols * scale, rows * scale), Image.Resampling.NEAREST
    )

    present: list[int] = []
    if die_labels is not None:
        present = sorted(
            int(c) for c in np.unique(die_labels[dies == 2]) if 0 < int(c) < len(PATTERNS)
        )
    font = ImageFont.load_default()
    title_h = len(title_lines) * _LINE_PX
    legend_h = len(present) * _LINE_PX
    legend_w = 110 if present else 0
    width = max(map_img.width + legend_w + 3 * _MARGIN_PX, 200)
    height = max(map_img.height, legend_h) + title_h + 3 * _MARGIN_PX

    canvas = Image.new("RGBA", (width, height), (255, 255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title_lines):
        draw.text((_MARGIN_PX, _MARGIN_PX + i * _LINE_PX), line, fill=(0, 0, 0, 255), font=font)
    top = title_h + 2 * _MARGIN_PX
    canvas.alpha_composite(map_img, (_MARGIN_PX, top))
    legend_x = map_img.width + 2 * _MARGIN_PX
    for i, code in enumerate(present):
        y = top + i * _LINE_PX
        draw.rectangle((legend_x, y + 2, legend_x + 10, y + 12), fill=(*PATTERN_RGB[code], 255))
        draw.text((legend_x + 14, y), PATTERNS[code], fill=(0, 0, 0, 255), font=font)

    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
