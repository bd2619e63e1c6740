"""Bucket placement maps back to the original die grid exactly."""

from __future__ import annotations

import numpy as np
import pytest

from ml.buckets import BUCKETS, IN_CHANNELS, encode, from_bucket, place, to_bucket


@pytest.mark.parametrize("shape", [(6, 9), (27, 27), (33, 52), (64, 64), (65, 40), (212, 175)])
def test_round_trip_is_exact_and_sides_are_multiples_of_32(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 3, size=shape).astype(np.float32)
    p = place(shape)
    assert p.bucket % 32 == 0 and p.bucket in BUCKETS
    assert p.scale >= 1 and p.stride == 1
    canvas = to_bucket(grid[None], p)
    assert canvas.shape == (1, p.bucket, p.bucket)
    assert np.array_equal(from_bucket(canvas, p)[0], grid)


def test_small_maps_are_upscaled_by_an_integer_factor() -> None:
    p = place((27, 30))
    assert (p.bucket, p.scale) == (64, 2)


def test_oversized_maps_keep_their_shape() -> None:
    p = place((300, 120))
    assert p.stride == 2 and p.bucket == BUCKETS[-1]
    back = from_bucket(to_bucket(np.ones((1, 300, 120), np.float32), p), p)
    assert back.shape == (1, 300, 120)


def test_encoding_channels() -> None:
    dies = np.array([[0, 1, 2], [1, 2, 1], [0, 1, 0]], dtype=np.uint8)
    x = encode(dies)
    assert x.shape == (IN_CHANNELS, 3, 3)
    assert np.array_equal(x[0], dies > 0) and np.array_equal(x[1], dies == 2)
    assert (x[2][dies == 0] == 0).all() and x[2].max() <= 1.5
