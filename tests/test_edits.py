import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.edits import (
    Edit,
    apply_edit,
    check_edit_names,
    keep_only_units,
    set_units,
    zero_units,
)


def _x(shape=(2, 3, 4, 5), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_per_unit_edit_broadcasts_under_strict_rank_promotion():
    x = _x()
    e = zero_units([1, 3], 5)
    got = np.asarray(e(jnp.asarray(x)))
    want = x.copy()
    want[..., [1, 3]] = 0
    np.testing.assert_array_equal(got, want)
    kept = np.asarray(keep_only_units([1, 3], 5)(jnp.asarray(x)))
    want = np.zeros_like(x)
    want[..., [1, 3]] = x[..., [1, 3]]
    np.testing.assert_array_equal(kept, want)


def test_boolean_mask_equals_indices():
    x = jnp.asarray(_x())
    mask = np.array([False, True, False, True, False])
    np.testing.assert_array_equal(zero_units(mask, 5)(x), zero_units([1, 3], 5)(x))


def test_set_units_in_region_matches_numpy():
    x = _x()
    region = np.zeros((3, 4), np.float32)
    region[1, 2] = 1.0
    region[0, 0] = 0.5
    got = np.asarray(set_units([0, 4], [7.0, -2.0], 5, region=region)(jnp.asarray(x)))
    alpha = region[..., None] * np.array([1, 0, 0, 0, 1], np.float32)
    value = np.array([7.0, 0, 0, 0, -2.0], np.float32)
    np.testing.assert_allclose(got, x * (1 - alpha) + value * alpha, rtol=1e-6)


def test_vmap_over_edit_stack_equals_loop():
    x = jnp.asarray(_x())
    stack = Edit(alpha=jnp.eye(5), value=jnp.zeros((5, 5)))
    out = jax.vmap(lambda e: e(x))(stack)
    for u in range(5):
        np.testing.assert_array_equal(out[u], zero_units([u], 5)(x))


def test_apply_edit_identity_and_unknown_names():
    x = jnp.asarray(_x())
    assert apply_edit(None, "conv5_3", x) is x
    assert apply_edit({"fc7": zero_units([0], 5)}, "conv5_3", x) is x
    with pytest.raises(KeyError, match="conv9"):
        check_edit_names({"conv9": zero_units([0], 5)}, ("conv5_3",))
