"""Per-unit top-k images against NumPy on all the data at once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.stats.topk import TopK, image_max


def numpy_topk(scores, k):
    """Per unit, images sorted by (score descending, index ascending)."""
    values, images = [], []
    for u in range(scores.shape[1]):
        order = np.lexsort((np.arange(len(scores)), -scores[:, u]))[:k]
        values.append(scores[order, u])
        images.append(order)
    return np.array(values), np.array(images)


def data(seed=0, n=45, units=6):
    rng = np.random.default_rng(seed)
    acts = rng.integers(0, 4, (n, 3, 3, units)).astype(np.float32)  # many ties
    acts[..., 0] = 1.0  # constant unit: ties everywhere, smallest indices win
    return acts


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_topk_equals_numpy(batch):
    acts = data()
    update = jax.jit(lambda s, a, i, v: s.update(image_max(a), i, v))
    stat = TopK.empty(6, 5)
    for start in range(0, len(acts), batch):
        a = acts[start:start + batch]
        index = np.arange(start, start + batch, dtype=np.int32)
        valid = np.arange(batch) < len(a)
        a = np.concatenate([a, np.full((batch - len(a),) + a.shape[1:], 50.0, np.float32)])
        stat = update(stat, jnp.asarray(a), jnp.asarray(index), jnp.asarray(valid))
    values, images = stat.compute()
    want_v, want_i = numpy_topk(acts.max(axis=(1, 2)), 5)
    np.testing.assert_array_equal(values, want_v)
    np.testing.assert_array_equal(images, want_i)
    np.testing.assert_array_equal(images[0], np.arange(5))


def test_merge_order_free_and_unfilled_slots():
    acts = data(1, n=12)
    scores = acts.max(axis=(1, 2))
    parts = [TopK.empty(6, 20).update(jnp.asarray(scores[i:i + 4]),
                                      jnp.arange(i, i + 4, dtype=jnp.int32))
             for i in range(0, 12, 4)]
    a = parts[0].merge(parts[1]).merge(parts[2])
    b = parts[2].merge(parts[0].merge(parts[1]))
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.index, b.index)
    values, images = a.compute()
    want_v, want_i = numpy_topk(scores, 12)
    np.testing.assert_array_equal(images[:, :12], want_i)
    np.testing.assert_array_equal(values[:, :12], want_v)
    assert np.all(images[:, 12:] == -1) and np.all(values[:, 12:] == -np.inf)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="scores must be"):
        TopK.empty(3, 2).update(jnp.zeros((4, 5)), jnp.arange(4))
    with pytest.raises(ValueError, match="positive"):
        TopK.empty(3, 0)
