"""The top-B merge of upsampled maps (``stats.upsample_merge``, on CPU one native
kernel that never writes the upsampled maps out) against ``merge_top`` of the
upsampled rows, and ``TopLabels.update(..., upsample=)`` against the statistic of
the upsampled activations, exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.stats import native, select
from jaxdissect.stats.quantile import pixel_rows
from jaxdissect.stats.toplabels import TopLabels
from jaxdissect.stats.upsample import Upsampler
from jaxdissect.stats.upsample_merge import merge_top_upsampled
from tests.stats.test_iou import CATEGORIES
from tests.stats.test_toplabels import L

UPSAMPLERS = {
    "plain": Upsampler.plain((4, 5), (16, 20)),
    "odd": Upsampler.plain((4, 5), (7, 11)),
    "layers": Upsampler.for_layers([(3, 1, 1), (2, 2, 0), (3, 1, 1)], (8, 10), (6, 9)),
}


@pytest.fixture(params=["native", "fallback"])
def kernels(request, monkeypatch):
    """Both paths of ``merge_top_upsampled``: the fused native kernel (where it
    builds) and ``merge_top`` of the upsampled rows."""
    if request.param == "native":
        if native.target("top_merge_upsampled") is None:
            pytest.skip("no native kernels")
    else:
        real = native.target
        monkeypatch.setattr(native, "target",
                            lambda name: None if name == "top_merge_upsampled" else real(name))
    return request.param


def relu_maps(rng, n, units, zeros=0.6):
    """Mostly zeros (a ReLU's output), a dead unit, values with ties."""
    acts = np.where(rng.random((n, 4, 5, units)) < zeros, 0.0,
                    rng.integers(1, 9, (n, 4, 5, units)) * 0.25).astype(np.float32)
    acts[..., 1] = 0.0
    return acts


@pytest.mark.parametrize("name", sorted(UPSAMPLERS))
@pytest.mark.parametrize("budget", [8, 96])
def test_fused_merge_equals_merge_of_upsampled_rows(kernels, name, budget):
    up = UPSAMPLERS[name]
    rng = np.random.default_rng(budget)
    units = 6
    top = np.full((units, budget), -np.inf, np.float32)
    fused = jax.jit(lambda t, a, v: merge_top_upsampled(t, a, v, up))
    for step in range(3):
        acts = relu_maps(rng, 9, units) if step != 1 else rng.gamma(
            1, 1, (9, 4, 5, units)).astype(np.float32)
        valid = np.arange(9) < (9 if step else 6)  # padding images in the first batch
        rows = np.asarray(pixel_rows(up(jnp.asarray(acts)), jnp.asarray(valid), -jnp.inf)[0])
        values, src = map(np.asarray, fused(top, acts, valid))
        both = np.concatenate([top, rows.T], axis=1)
        np.testing.assert_array_equal(np.take_along_axis(both, src, 1), values)
        assert all(len(set(r)) == budget for r in src)
        np.testing.assert_array_equal(np.sort(values, 1), np.sort(both, 1)[:, -budget:])
        top = values


def native_sample_rows(n, stride=32):
    """The rows the native kernel samples for a floor estimate (``top_merge.h``)."""
    s = np.arange(-(-n // stride), dtype=np.uint64)
    return np.minimum(n - 1, s * stride + ((s * 2654435761) % 2**32 >> 20) % stride)


def test_estimate_that_fails_its_count_is_rescanned(kernels):
    """Distinct values whose sample overstates the level (every large value on a
    sampled pixel): fewer than B exceed the estimate, no ties complete it, and the
    unit is rescanned. Same-size plain upsampling is the identity."""
    up = Upsampler.plain((4, 5), (4, 5))
    n_images, units, budget = 40, 2, 64
    flat = np.random.default_rng(0).permutation(n_images * 20 * units).astype(np.float32)
    flat = flat.reshape(n_images * 20, units)
    big = native_sample_rows(len(flat)).astype(int)
    flat[big] += 1e5  # the sampled pixels hold the largest values
    acts = flat.reshape(n_images, 4, 5, units)
    top = np.full((units, budget), -np.inf, np.float32)
    values, _ = merge_top_upsampled(jnp.asarray(top), jnp.asarray(acts), None, up)
    np.testing.assert_array_equal(np.sort(np.asarray(values), 1),
                                  np.sort(flat.T, 1)[:, -budget:])
    # the plain native kernel takes the same path on the same rows
    values, _ = select.merge_top(jnp.asarray(top), jnp.asarray(flat))
    np.testing.assert_array_equal(np.sort(np.asarray(values), 1),
                                  np.sort(flat.T, 1)[:, -budget:])


def test_toplabels_update_with_upsample_equals_upsampled_input(kernels):
    """Thresholds, counts and the "netdissect" rule's category areas (tracked
    images), with padding, equal the statistic of ``up(acts)``."""
    up = UPSAMPLERS["odd"]
    rng = np.random.default_rng(7)
    acts = relu_maps(rng, 20, 5, zeros=0.3)
    seg = rng.choice([0, 1, 2, 3, 4, 6], size=(20, 2, 7, 11)).astype(np.int32)
    q = 0.05
    budget = 128
    stats = [TopLabels.empty(5, budget, L, 2, track_images=True) for _ in range(2)]
    fused = jax.jit(lambda s, a, g, v, i: s.update(a, g, v, i, up))
    plain = jax.jit(lambda s, a, g, v, i: s.update(up(a), g, v, i))
    for start in range(0, 20, 8):
        a, g = acts[start:start + 8], seg[start:start + 8]
        pad = 8 - len(a)
        valid = np.arange(8) < len(a)
        a = np.concatenate([a, np.full((pad,) + a.shape[1:], 99.0, np.float32)])
        g = np.concatenate([g, np.ones((pad,) + g.shape[1:], np.int32)])
        index = np.arange(start, start + 8, dtype=np.int32)
        stats = [fused(stats[0], a, g, valid, index), plain(stats[1], a, g, valid, index)]
    t = stats[1].thresholds(q)
    np.testing.assert_array_equal(stats[0].thresholds(q), t)
    expect = stats[1].counts(t, CATEGORIES)
    for key, value in stats[0].counts(t, CATEGORIES).items():
        np.testing.assert_array_equal(value, expect[key])
    assert int(expect["pixels"]) == 20 * 7 * 11
    with pytest.raises(ValueError, match="seg must be"):
        stats[0].update(jnp.asarray(acts[:2]), jnp.asarray(seg[:2, :, :6]), upsample=up)
