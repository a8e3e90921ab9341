"""Exact quantile thresholds against NumPy on all the data at once."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.stats.quantile import (
    Quantile,
    float_to_key,
    key_to_float,
    radix_thresholds,
    rank_for_level,
)
from jaxdissect.stats.wide import Wide

LEVELS = (0.005, 0.01, 0.1, 0.5, 1.0)


def numpy_threshold(x, q):
    """k-th largest per unit of x [..., u] with k = ceil(q n), q as a decimal."""
    flat = x.reshape(-1, x.shape[-1])
    n = len(flat)
    k = max(1, int(np.ceil(round(q * 1000) * n / 1000)))  # levels here are multiples of 1/1000
    return -np.sort(-flat, axis=0)[k - 1], k


def tied_data(seed=0, n=37, units=5):
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, (n, 3, 4, units)).astype(np.float32)
    x[..., 1] = 2.5  # a constant unit
    x[..., 2] = rng.standard_normal((n, 3, 4)).astype(np.float32)
    return x


def stream(stat, x, batch):
    """Feeds x in fixed-size padded batches, as the runner does."""
    update = jax.jit(lambda s, xb, v: s.update(xb, v))
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        valid = np.arange(batch) < len(xb)
        xb = np.concatenate([xb, np.full((batch - len(xb),) + xb.shape[1:], 99.0, np.float32)])
        stat = update(stat, jnp.asarray(xb), jnp.asarray(valid))
    return stat


def test_rank_for_level_reads_q_as_decimal():
    assert rank_for_level(0.01, 300) == 3  # 0.01 * 300 is 3.0000000000000004 in floats
    assert rank_for_level(0.01, 301) == 4
    assert rank_for_level(0.001, 10) == 1
    with pytest.raises(ValueError, match="quantile level"):
        rank_for_level(0.0, 10)
    with pytest.raises(ValueError, match="no values"):
        rank_for_level(0.5, 0)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_thresholds_equal_numpy_with_ties(batch):
    x = tied_data()
    got = stream(Quantile.empty(5, 512), x, batch).compute(LEVELS)
    for q, row in zip(LEVELS, got):
        want, k = numpy_threshold(x, q)
        np.testing.assert_array_equal(row, want)
        flat = x.reshape(-1, 5)
        assert np.all((flat > row).sum(0) < k) and np.all((flat >= row).sum(0) >= k)
    assert np.all(got[:, 1] == 2.5)  # constant unit


def test_merge_is_associative_and_order_free():
    x = tied_data(1)
    parts = [Quantile.empty(5, 256).update(jnp.asarray(x[i:i + 9])) for i in range(0, 37, 9)]
    left = parts[0].merge(parts[1]).merge(parts[2].merge(parts[3].merge(parts[4])))
    right = parts[4].merge(parts[2]).merge(parts[0]).merge(parts[3]).merge(parts[1])
    whole = Quantile.empty(5, 256).update(jnp.asarray(x))
    for s in (left, right):
        np.testing.assert_array_equal(np.sort(s.top, 1), np.sort(whole.top, 1))  # multisets
        assert int(s.count.to_numpy()) == 37 * 12


def test_budget_too_small_is_a_clear_error():
    stat = Quantile.empty(2, 4).update(jnp.zeros((10, 2, 2, 2)))
    assert stat.fits(0.05) and not stat.fits(0.5)
    with pytest.raises(ValueError, match="budget"):
        stat.compute(0.5)


def test_update_compiles_once():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(s, x, v):
        return s.update(x, v)

    stat = Quantile.empty(3, 16)
    for i in range(4):
        stat = update(stat, jnp.full((2, 2, 2, 3), float(i)), jnp.array([True, i % 2 == 0]))
    assert int(stat.count.to_numpy()) == 4 * 4 + 2 * 4  # 4 positions per valid image


def test_keys_preserve_order_and_invert():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(500) * 10.0 ** rng.integers(-30, 30, 500),
                        [0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45]]).astype(np.float32)
    keys = np.asarray(float_to_key(jnp.asarray(x)))
    order = np.argsort(keys, kind="stable")
    assert np.all(np.diff(x[order]) >= 0)
    np.testing.assert_array_equal(key_to_float(keys).view(np.uint32), x.view(np.uint32))


@pytest.mark.parametrize("seed", [0, 1])
def test_radix_select_equals_numpy(seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((23, 5, 5, 4)) * 100).astype(np.float32)
    x[..., 0] = np.round(x[..., 0] / 50)  # heavy ties, negative values and zeros
    x[..., 1] = -7.25  # constant
    x[3, :, :, 2] = np.inf
    batches = [x[i:i + 6] for i in range(0, 23, 6)]
    got = radix_thresholds(lambda: [jnp.asarray(b) for b in batches], 4, LEVELS)
    for q, row in zip(LEVELS, got):
        np.testing.assert_array_equal(row, numpy_threshold(x, q)[0])


def test_wide_counts_are_exact_past_int32():
    w = Wide.zeros((2,))
    add = jax.jit(lambda w, x: w.add(x))
    for _ in range(9):
        w = add(w, jnp.array([(1 << 30) - 1, 5], jnp.int32))
    w = w.merge(w)
    np.testing.assert_array_equal(w.to_numpy(), [18 * ((1 << 30) - 1), 90])


@pytest.mark.parametrize("known,bits", [(0, 11), (11, 11), (22, 10)])
def test_native_radix_pass_equals_the_xla_one(known, bits):
    """The native CPU histogram kernel and the XLA scatter-add version agree."""
    from jaxdissect.stats import native
    from jaxdissect.stats.quantile import _native_histogram, _xla_histogram

    target = native.target("radix_histogram")
    if target is None:
        pytest.skip("native kernels unavailable")
    rng = np.random.default_rng(known)
    rows = np.concatenate([rng.normal(size=(300, 5)), -np.abs(rng.normal(size=(40, 5))),
                           np.zeros((20, 5)), np.full((3, 5), -0.0)]).astype(np.float32)
    ok = (rng.random(len(rows)) < 0.9).astype(np.uint8)
    keys = np.asarray(float_to_key(jnp.asarray(rows)))
    # level 0 and 1 of each unit look inside the bins of rows 0 and 1
    prefix = (keys[:2].T >> (32 - known) if known else np.zeros((5, 2))).astype(np.uint32)
    shape = (5, 2, 1 << bits)
    a = jax.jit(lambda r, o, p: _native_histogram(target, r, o, p, shape=shape, known=known,
                                                  bits=bits))(rows, ok, prefix)
    b = _xla_histogram(jnp.asarray(rows), jnp.asarray(ok), jnp.asarray(prefix), shape=shape,
                       known=known, bits=bits)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(np.asarray(a).sum()) > 0
