"""The shared renderer: valid PNG, pattern colours only on failing dies, legend."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ml.render import FAIL_RGBA, PASS_RGBA, PATTERN_RGB, render_wafer_png
from ml.taxonomy import pattern_index


def _grid() -> tuple[np.ndarray, np.ndarray]:
    dies = np.ones((10, 12), dtype=np.uint8)
    dies[0, :] = 0
    dies[5, 2:6] = 2
    labels = np.zeros_like(dies)
    labels[5, 2:6] = pattern_index("Scratch")
    labels[6, 2:6] = pattern_index("Center")  # on passing dies: must not be drawn
    return dies, labels


def test_render_returns_png_with_pattern_colour_on_fails_only() -> None:
    dies, labels = _grid()
    png = render_wafer_png(dies, labels, title_lines=("wafer W1", "Scratch 0.91"), scale=10)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    colours = {tuple(int(v) for v in px) for px in img.reshape(-1, 4)}
    assert (*PATTERN_RGB[pattern_index("Scratch")], 255) in colours
    assert PASS_RGBA in colours
    # Center appears only on passing dies, so it is neither drawn nor in the legend.
    assert (*PATTERN_RGB[pattern_index("Center")], 255) not in colours


def test_render_without_labels_shows_fail_grey() -> None:
    dies, _ = _grid()
    png = render_wafer_png(dies)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    assert img.shape[0] > dies.shape[0]
    assert (img.reshape(-1, 4) == np.array(FAIL_RGBA)).all(axis=1).any()
