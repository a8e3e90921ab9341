"""Sharded tallies over the 4 forced host devices equal one device's result."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.runtime import devices
from jaxdissect.stats import IoUTally, Quantile, TopK, image_max
from jaxdissect.stats.toplabels import TopLabels


def test_four_devices_are_forced():
    assert len(jax.local_devices()) == 4


def tally(devs, batch_size, acts, seg, t):
    chex.clear_trace_counter()

    @chex.assert_max_traces(n=1)
    def update(stat, batch, thresholds):
        a, v = batch["acts"], batch["valid"]
        q, top, iou, fused = stat.parts
        return devices.Joint((
            q.update(a, v),
            top.update(image_max(a), batch["index"], v),
            iou.update(a, thresholds, batch["seg"], v),
            fused.update(a, batch["seg"], v)))

    empty = devices.Joint((Quantile.empty(3, 64), TopK.empty(3, 4), IoUTally.empty(3, 5),
                            TopLabels.empty(3, 64, 5, 2)))
    step = devices.sharded_tally(update, empty, devs)
    state = step.init(empty)
    size = devices.padded_size(batch_size, len(devs))
    for i in range(0, len(acts), batch_size):
        batch = {"acts": acts[i:i + batch_size], "seg": seg[i:i + batch_size],
                 "index": np.arange(i, min(i + batch_size, len(acts)), dtype=np.int32)}
        batch, valid = devices.pad_batch(batch, size)
        state = step(state, dict(batch, valid=valid), jnp.asarray(t))
    return step.result(state)


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 7])
def test_one_and_four_devices_agree(batch_size):
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 5, (19, 4, 4, 3)).astype(np.float32)
    seg = rng.integers(0, 5, (19, 2, 4, 4)).astype(np.int32)
    t = np.array([2.0, 3.0, 1.0], np.float32)
    one = tally(jax.local_devices()[:1], batch_size, acts, seg, t)
    four = tally(jax.local_devices(), batch_size, acts, seg, t)
    # buffers are multisets in no order (and the fused one may keep other copies of
    # boundary ties): compare them sorted, and the fused one by its results
    np.testing.assert_array_equal(np.sort(one.parts[0].top, 1), np.sort(four.parts[0].top, 1))
    for a, b in zip(jax.tree_util.tree_leaves(one.parts[1:3]),
                    jax.tree_util.tree_leaves(four.parts[1:3])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    q, top, iou, fused = four.parts
    t_one = one.parts[3].thresholds(0.1)
    np.testing.assert_array_equal(fused.thresholds(0.1), t_one)
    for key, value in one.parts[3].counts(t_one).items():
        np.testing.assert_array_equal(fused.counts(t_one)[key], value)
    oracle = IoUTally.empty(3, 5).update(jnp.asarray(acts), jnp.asarray(t_one), jnp.asarray(seg))
    np.testing.assert_array_equal(fused.counts(t_one)["inter"], oracle.counts()["inter"])
    flat = acts.reshape(-1, 3)
    np.testing.assert_array_equal(q.compute(0.1), -np.sort(-flat, 0)[int(np.ceil(0.1 * 304)) - 1])
    assert int(iou.pixels.to_numpy()) == 19 * 16
    assert set(np.asarray(top.index).ravel()) <= set(range(19))


def test_pad_batch_and_sizes():
    batch, valid = devices.pad_batch({"x": np.arange(3)}, 8)
    np.testing.assert_array_equal(batch["x"], [0, 1, 2, 2, 2, 2, 2, 2])
    np.testing.assert_array_equal(valid, [1, 1, 1, 0, 0, 0, 0, 0])
    assert devices.padded_size(7, 4) == 8 and devices.padded_size(8, 4) == 8
    with pytest.raises(ValueError, match="disagree"):
        devices.pad_batch({"x": np.zeros(2), "y": np.zeros(3)}, 4)
    with pytest.raises(ValueError, match="batch_size"):
        devices.padded_size(0, 4)
