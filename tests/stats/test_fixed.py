"""Fixed-point sums: exact and independent of how the values are split."""

import jax.numpy as jnp
import numpy as np

from jaxdissect.stats.fixed import FixedSum, merge_fields, numpy_fields


def test_fixed_sum_is_exact_and_order_free():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (4000, 3)).astype(np.float32)
    q = np.round(x.astype(np.float64) * 2 ** 16)          # the values as rounded
    whole = FixedSum.zeros((3,), 16)
    for i in range(0, 4000, 1000):
        whole = whole.add(jnp.asarray(x[i:i + 1000]))
    parts = [FixedSum.zeros((3,), 16).add(jnp.asarray(x[i::7])) for i in range(7)]
    merged = parts[0]
    for p in parts[1:]:
        merged = merged.merge(p)
    np.testing.assert_array_equal(whole.to_numpy(), q.sum(0) / 2 ** 16)
    np.testing.assert_array_equal(merged.to_numpy(), whole.to_numpy())
    mask = jnp.asarray(rng.random((4000, 3)) < 0.5)
    np.testing.assert_array_equal(FixedSum.zeros((3,), 16).add(jnp.asarray(x), 0, mask)
                                  .to_numpy(), np.where(mask, q, 0).sum(0) / 2 ** 16)


def test_shares_exact_at_24_bits_and_field_helpers():
    from jaxdissect.experiments.intervene import ShareTally
    base = jnp.asarray(np.random.default_rng(1).integers(0, 257, (5, 3)) / 256, jnp.float32)
    edited = jnp.zeros((2, 5, 3), jnp.float32)
    a = ShareTally.empty(2, 3).update(base, edited, jnp.ones(5, bool))
    b = ShareTally.empty(2, 3).update(base, edited, jnp.array([1, 0, 1, 0, 0], bool))
    out = numpy_fields(merge_fields(a, b))
    bb = np.asarray(base, np.float64)
    np.testing.assert_array_equal(out["base"], bb.sum(0) + bb[[0, 2]].sum(0))
    np.testing.assert_array_equal(out["delta_sq"][0], (bb ** 2).sum(0) + (bb[[0, 2]] ** 2).sum(0))
    assert out["n"] == 7 and out["n"].dtype == np.int64
