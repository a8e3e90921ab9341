"""ZSource draws the reference's z samples bit for bit, by random access."""

import numpy as np
import pytest

from jaxdissect.data import source
from jaxdissect.data.source import ZSource, iterate


def reference_z(size, depth, seed):
    """``zdataset.standard_z_sample`` as the reference computes it (its torch
    ``.float()`` is a float64 -> float32 cast, as NumPy's ``astype``)."""
    rng = np.random.RandomState(seed)
    return rng.standard_normal(size * depth).reshape(size, depth).astype(np.float32)


@pytest.mark.parametrize("size,depth,seed", [(10_000, 512, 1), (37, 7, 3)])
def test_whole_draw_equals_the_reference_bit_for_bit(size, depth, seed):
    z = ZSource(size, depth, seed).batch(0, size)["z"]
    assert z.dtype == np.float32 and z.shape == (size, depth)
    assert np.array_equal(z.view(np.uint32), reference_z(size, depth, seed).view(np.uint32))


def test_batches_are_rows_of_the_whole_sample():
    ref = reference_z(101, 9, 5)
    src = ZSource(101, 9, 5)
    for a, b in [(0, 1), (17, 40), (100, 101), (3, 3), (0, 101)]:
        assert np.array_equal(src.batch(a, b)["z"], ref[a:b])
    # odd batch edges (the legacy generator draws normals in pairs)
    got = np.concatenate([b["z"] for _, b in iterate(src, 7)])
    assert np.array_equal(got, ref)
    # a shorter source is a prefix of a longer one (as the reference's)
    assert np.array_equal(ZSource(10, 9, 5).batch(0, 10)["z"], ref[:10])


def test_draw_is_cached_once_and_batches_are_writable_copies(monkeypatch):
    calls = []
    real = np.random.RandomState

    def counting(seed):
        calls.append(seed)
        return real(seed)

    monkeypatch.setattr(source, "_DRAWS", {})
    monkeypatch.setattr(source.np.random, "RandomState", counting)
    src = ZSource(50, 4, 11)
    for i in range(0, 50, 5):
        src.batch(i, i + 5)
    assert calls == [11]
    z = src.batch(0, 2)["z"]
    z[:] = 0  # a caller's batch is its own
    assert np.array_equal(src.batch(0, 2)["z"], reference_z(2, 4, 11))


def test_bad_ranges():
    with pytest.raises(IndexError):
        ZSource(5, 3).batch(2, 6)
    with pytest.raises(ValueError):
        ZSource(0, 3)
