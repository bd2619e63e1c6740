"""Bucket placement maps back to the original die grid exactly."""

from __future__ import annotations

import numpy as np
import pytest

from ml.buckets import BUCKETS, IN_CHANNELS, encode, from_bucket, line_evidence, place, to_bucket


@pytest.mark.parametrize("shape", [(6, 9), (27, 27), (33, 52), (64, 64), (65, 40), (212, 175)])
def test_round_trip_is_exact_and_sides_are_multiples_of_32(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 3, size=shape).astype(np.float32)
    p = place(shape)
    assert p.bucket % 32 == 0 and p.bucket in BUCKETS
    assert p.scale >= 1 and p.stride == 1
    canvas = to_bucket(grid[None], p)
    assert canvas.shape == (1, p.bucket, p.bucket)
    # Each die's block is averaged back: exact up to float rounding of the mean.
    assert np.allclose(from_bucket(canvas, p)[0], grid, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(27, 30), (33, 33), (40, 63), (65, 40), (9, 12)])
def test_every_map_fills_its_bucket_with_whole_die_blocks(shape: tuple[int, int]) -> None:
    p = place(shape)
    ids = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(1, *shape) + 1
    canvas = to_bucket(ids, p)[0]
    rows_used = (canvas > 0).any(axis=1).sum()
    cols_used = (canvas > 0).any(axis=0).sum()
    assert max(rows_used, cols_used) == p.bucket  # the longer side spans the input
    block_sides = {int((canvas == k).any(axis=1).sum()) for k in ids.ravel()}
    assert block_sides <= {int(np.floor(p.scale)), int(np.ceil(p.scale))}


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


def test_line_evidence_tells_a_scratch_from_a_blob_and_from_isolated_fails() -> None:
    fail = np.zeros((21, 21), dtype=bool)
    for i in range(3, 17):  # a diagonal scratch with one gap
        fail[i, i] = i != 9
    fail[2:6, 14:18] = True  # a 4x4 blob
    fail[18, 3] = True  # an isolated fail
    support, anisotropy = line_evidence(fail)
    on_line = [(i, i) for i in range(5, 15) if i != 9]
    assert min(support[p] for p in on_line) >= 0.7  # high along the line, gap and all
    assert min(anisotropy[p] for p in on_line) > 2 * anisotropy[3:5, 15:17].max()  # directional
    assert support[18, 3] < 0.3  # an isolated fail has no line through it
    assert not support[~fail].any() and not anisotropy[~fail].any()


def test_the_encoding_only_appends_channels() -> None:
    """A model trained on the first k planes reads encode(dies, k): older models keep working."""
    dies = np.random.default_rng(3).integers(0, 3, size=(30, 28)).astype(np.uint8)
    full = encode(dies)
    for k in range(3, IN_CHANNELS + 1):
        assert np.array_equal(encode(dies, k), full[:k])
    with pytest.raises(ValueError, match="input channels"):
        encode(dies, IN_CHANNELS + 1)
