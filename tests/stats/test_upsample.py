"""Receptive-field-aligned upsampling against NumPy and torch's grid_sample on the
reference's grid."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxdissect.stats import native
from jaxdissect.stats.upsample import (
    Upsampler,
    sequence_data_size,
    sequence_scale_offset,
    two_taps,
)

VGG_CONV5_3 = [(3, 1, 1)] * 2 + [(2, 2, 0)] + [(3, 1, 1)] * 2 + [(2, 2, 0)] + \
    [(3, 1, 1)] * 3 + [(2, 2, 0)] + [(3, 1, 1)] * 3 + [(2, 2, 0)] + [(3, 1, 1)] * 3


def reference_grid_axis(target, data, image=None, scale_offset=None):
    """The grid_sample coordinate in [-1, 1] of each target pixel (the reference's
    formula), one axis."""
    if scale_offset is None:
        s = target / data
        o = 0.5 * s - 0.5
    else:
        s, o = scale_offset
        if image is not None:
            s, o = s * (target - 1) / (image - 1), o * (target - 1) / (image - 1)
    return (np.arange(target) - o) * (2 / (s * max(1, data - 1))) - 1


def numpy_bilinear(acts, gy, gx):
    """Per-pixel bilinear sampling, align_corners=True, zero padding. acts [b,h,w,u]."""
    b, h, w, u = acts.shape
    out = np.zeros((b, len(gy), len(gx), u))
    for ty, g in enumerate(gy):
        sy = (g + 1) / 2 * (h - 1)
        for tx, f in enumerate(gx):
            sx = (f + 1) / 2 * (w - 1)
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[:, ty, tx] += wy * wx * acts[:, yy, xx]
    return out


def torch_grid_sample(acts, gy, gx):
    grid = np.stack(np.broadcast_arrays(gx[None, :], gy[:, None]), axis=-1)[None]
    data = torch.from_numpy(acts.transpose(0, 3, 1, 2).astype(np.float64))
    grid = torch.from_numpy(grid).expand(len(acts), -1, -1, -1)
    out = torch.nn.functional.grid_sample(data, grid, mode="bilinear", padding_mode="zeros",
                                          align_corners=True)
    return out.numpy().transpose(0, 2, 3, 1)


def test_scale_offset_of_layer_stacks():
    assert sequence_scale_offset(VGG_CONV5_3) == ((16, 7.5), (16, 7.5))
    assert sequence_data_size(VGG_CONV5_3, (224, 224)) == (14, 14)
    # two unpadded 3x3 stride-2 convs: output o sees input 4o + 3
    assert sequence_scale_offset([(3, 2, 0), (3, 2, 0)]) == ((4, 3.0), (4, 3.0))
    # per-axis kernels and dilation
    assert sequence_scale_offset([((3, 1), 1, (1, 0), (2, 1))]) == ((1, 1.0), (1, 0.0))
    assert sequence_data_size([(11, 4, 2)], (227, 227)) == (56, 56)
    with pytest.raises(ValueError, match="geometry"):
        sequence_scale_offset([(3, 1)])


CASES = [
    dict(data=(14, 14), target=(56, 56)),  # plain (the reference's VGG default)
    dict(data=(8, 8), target=(64, 64)),  # plain (generators)
    dict(data=(5, 7), target=(9, 12)),  # plain, non-square, non-integer scale
    dict(data=(1, 3), target=(4, 6)),  # one-pixel axis
    dict(layers=VGG_CONV5_3, image=(224, 224), target=(56, 56)),
    dict(layers=[(11, 4, 2), (3, 2, 0), (5, 1, 2), (3, 2, 0)], image=(67, 67), target=(17, 17)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c["target"])) +
                         ("-layers" if "layers" in c else "-plain"))
def test_upsampler_equals_numpy_and_grid_sample(case):
    if "layers" in case:
        up = Upsampler.for_layers(case["layers"], case["image"], case["target"])
        so = sequence_scale_offset(case["layers"])
        data = sequence_data_size(case["layers"], case["image"])
        gy, gx = (reference_grid_axis(case["target"][a], data[a], case["image"][a], so[a])
                  for a in range(2))
    else:
        data = case["data"]
        up = Upsampler.plain(data, case["target"])
        gy, gx = (reference_grid_axis(case["target"][a], data[a]) for a in range(2))
    assert up.data_shape == tuple(data) and up.target_shape == case["target"]
    acts = np.random.default_rng(0).standard_normal((2,) + tuple(data) + (3,))
    got = np.asarray(jax.jit(lambda u, a: u(a))(up, jnp.asarray(acts, jnp.float32)))
    np.testing.assert_allclose(got, numpy_bilinear(acts, gy, gx), atol=2e-5)
    np.testing.assert_allclose(got, torch_grid_sample(acts, gy, gx), atol=2e-5)
    # the two-tap blends agree with the dense matrices (the fallback) to rounding
    assert up.taps is not None
    dense = Upsampler(up.wy, up.wx)
    np.testing.assert_allclose(got, np.asarray(dense(jnp.asarray(acts, jnp.float32))),
                               rtol=1e-6, atol=1e-6)


def test_matrices_with_more_taps_use_the_dense_path():
    wy = np.full((3, 2), 0.5, np.float32)
    wx = np.array([[0.2, 0.3, 0.5], [1, 0, 0]], np.float32)  # 3 taps in a row
    assert Upsampler.create((2, 2), (3, 4)).taps is not None
    assert two_taps(wx) is None
    assert two_taps(wy) == ((0, 0, 0), (1, 1, 1), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    acts = np.random.default_rng(1).random((1, 2, 3, 2)).astype(np.float32)
    got = Upsampler(jnp.asarray(wy), jnp.asarray(wx))(jnp.asarray(acts))
    np.testing.assert_allclose(got, np.einsum("yi,xj,bijc->byxc", wy, wx, acts), rtol=1e-6)


def test_wrong_shape_is_a_clear_error():
    up = Upsampler.plain((4, 4), (8, 8))
    with pytest.raises(ValueError, match="expected acts"):
        up(jnp.zeros((1, 5, 4, 2)))
    with pytest.raises(ValueError, match="positive"):
        Upsampler.plain((0, 4), (8, 8))


def numpy_blends(acts, up):
    """The two-tap blends in NumPy float32: along x, then y, each output
    ``where(w0 != 0, a[i0] * w0, 0) + where(w1 != 0, a[i1] * w1, 0)``, non-finite
    inputs read as NaN."""
    x = np.where(np.isfinite(acts), acts, np.nan).astype(np.float32)
    for axis, (i0, i1, w0, w1) in ((2, up.taps[1]), (1, up.taps[0])):
        shape = [1] * 4
        shape[axis] = -1
        terms = [np.where(np.reshape(w, shape) != 0,
                          np.take(x, i, axis=axis) * np.reshape(w, shape).astype(np.float32),
                          np.float32(0)) for i, w in ((i0, w0), (i1, w1))]
        x = terms[0] + terms[1]
    return x


@pytest.mark.parametrize("case", CASES[:3] + CASES[4:5], ids=lambda c: "x".join(
    map(str, c["target"])))
def test_native_blends_are_numpy_float32_bit_for_bit(case):
    """On CPU the native kernel rounds each product before the sum (no fused
    multiply-add), so the values do not depend on what XLA fuses them with."""
    if native.target("upsample") is None:
        pytest.skip("no native kernels: XLA computes the blends")
    up = (Upsampler.for_layers(case["layers"], case["image"], case["target"])
          if "layers" in case else Upsampler.plain(case["data"], case["target"]))
    rng = np.random.default_rng(2)
    acts = (rng.standard_normal((3,) + up.data_shape + (5,)) * 3.7).astype(np.float32)
    acts[0, 0, 0, 1], acts[1, -1, 0, 2], acts[2, 0, -1, 3] = np.inf, -np.inf, np.nan
    expect = numpy_blends(acts, up)
    for fn in (jax.jit(up.__call__), jax.jit(lambda a: up(a) * 1.0 + 0.0)):
        got = np.asarray(fn(jnp.asarray(acts)))
        np.testing.assert_array_equal(got.view(np.int32), expect.view(np.int32))


def test_blends_vmap_and_differentiate():
    up = Upsampler.plain((3, 4), (7, 9))
    acts = jnp.asarray(np.random.default_rng(4).random((2, 2, 3, 4, 3)), jnp.float32)
    stacked = jax.jit(jax.vmap(up))(acts)
    for i in range(2):
        np.testing.assert_array_equal(np.asarray(stacked[i]), np.asarray(up(acts[i])))
    # linear: the gradient of the sum is each input's total weight
    grad = jax.grad(lambda a: up(a).sum())(acts[0])
    weight = np.outer(np.asarray(up.wy).sum(0), np.asarray(up.wx).sum(0))
    np.testing.assert_allclose(np.asarray(grad), np.broadcast_to(
        weight[None, :, :, None], grad.shape), rtol=1e-6)
