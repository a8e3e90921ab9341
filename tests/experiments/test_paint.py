"""Painting with units vs NumPy oracles of ``x*(1-a) + v*a`` at the layer and
full (unsplit) forwards of the generator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.experiments import paint
from jaxdissect.models import proggan
from jaxdissect.models.proggan import ProgressiveGenerator
from jaxdissect.taps import run

# layer4 is 8x8 with 8 units; output 16x16
MODEL = ProgressiveGenerator(sizes=(8, 8, 8, 8))
UNITS = 8


@pytest.fixture(scope="module")
def gen():
    params = MODEL.init(jax.random.key(0), jnp.zeros((1, 8)))["params"]
    z = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    return params, z


def numpy_grid(mask, h, w):
    big_h, big_w = mask.shape[-2:]
    out = np.zeros(mask.shape[:-2] + (h, w))
    bh, bw = big_h // h, big_w // w
    for i in range(h):
        for j in range(w):
            out[..., i, j] = mask[..., i * bh:(i + 1) * bh, j * bw:(j + 1) * bw].mean((-2, -1))
    return out


def test_region_to_grid_vs_numpy():
    rng = np.random.default_rng(1)
    for shape, grid in (((16, 16), (8, 8)), ((2, 12, 20), (3, 5)), ((64, 64), (8, 8))):
        m = (rng.uniform(size=shape) > 0.6).astype(np.float32) * rng.uniform(size=shape)
        np.testing.assert_allclose(np.asarray(paint.region_to_grid(m, grid)),
                                   numpy_grid(m, *grid), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="does not tile"):
        paint.region_to_grid(np.ones((15, 16)), (8, 8))
    with pytest.raises(ValueError, match="region mask"):
        paint.region_to_grid(np.ones(16), (8, 8))


def test_box_mask():
    m = paint.box_mask((16, 16), (0.25, 0.5, 0.75, 1.0))
    want = np.zeros((16, 16), np.float32)
    want[4:12, 8:16] = 1
    np.testing.assert_array_equal(m, want)
    with pytest.raises(ValueError, match="box"):
        paint.box_mask((16, 16), (0.5, 0, 0.2, 1))


def layer4(params, z, edits=None):
    return np.asarray(run(MODEL.apply, {"params": params}, jnp.asarray(z), edits=edits,
                          capture=("layer4",))[1]["layer4"], np.float64)


@pytest.mark.slow
def test_edit_at_layer_vs_numpy_oracle(gen):
    params, z = gen
    rng = np.random.default_rng(2)
    x = layer4(params, z)
    high = rng.uniform(1, 3, UNITS).astype(np.float32)
    mask = paint.box_mask((16, 16), (0.1, 0.2, 0.6, 0.9))
    grid = np.asarray(paint.region_to_grid(mask, (8, 8)))
    units = [5, 1, 6]
    for mode in ("on", "off"):
        e = paint.paint_edit(units, UNITS, grid, mode, high)
        got = layer4(params, z, edits={"layer4": e})
        a = np.zeros((1, 8, 8, UNITS))
        a[..., units] = grid[None, :, :, None]
        v = np.zeros(UNITS)
        if mode == "on":
            v[units] = high[units]
        np.testing.assert_allclose(got, x * (1 - a) + v * a, rtol=1e-5, atol=1e-6)
        # outside the region, and on the other units, the layer is untouched
        outside = np.broadcast_to(a == 0, x.shape)
        np.testing.assert_array_equal(got[outside], x[outside])
    # per-image regions [b, h, w]; high given per chosen unit
    masks = (rng.uniform(size=(3, 16, 16)) > 0.5).astype(np.float32)
    grids = np.asarray(paint.region_to_grid(masks, (8, 8)))
    e = paint.paint_edit(units, UNITS, grids, "on", high[units])
    got = layer4(params, z, edits={"layer4": e})
    a = np.zeros((3, 8, 8, UNITS))
    a[..., units] = grids[..., None]
    v = np.zeros(UNITS)
    v[units] = high[units]
    np.testing.assert_allclose(got, x * (1 - a) + v * a, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_paint_stack_equals_full_forwards(gen):
    params, z = gen
    high = np.full(UNITS, 2.5, np.float32)
    m1 = paint.region_to_grid(paint.box_mask((16, 16), (0, 0, 0.5, 0.5)), (8, 8))
    m2 = paint.region_to_grid(np.random.default_rng(3).uniform(size=(3, 16, 16)), (8, 8))
    edits = [paint.paint_edit([0, 3], UNITS, m1, "on", high),
             paint.paint_edit([2, 4, 7], UNITS, m2, "off"),
             paint.paint_edit([1], UNITS, m1, "off")]
    spec = proggan.spec(MODEL, params)
    acts, out = paint.paint(spec, spec.params, z, "layer4", paint.stack_edits(edits))
    assert out.shape == (3, 3, 16, 16, 3)
    np.testing.assert_allclose(np.asarray(acts), layer4(params, z), rtol=1e-5, atol=1e-6)
    for i, e in enumerate(edits):
        want, _ = run(MODEL.apply, {"params": params}, jnp.asarray(z), edits={"layer4": e})
        np.testing.assert_allclose(np.asarray(out[i]), np.asarray(want), rtol=1e-4, atol=1e-5)


def test_paint_bad_input(gen):
    params, z = gen
    spec = proggan.spec(MODEL, params)
    grid16 = np.ones((16, 16), np.float32)      # image-size mask, not downsampled
    e = paint.stack_edits([paint.paint_edit([0], UNITS, grid16, "off")])
    with pytest.raises(ValueError, match="edit alpha must be"):
        paint.paint(spec, spec.params, z, "layer4", e)
    with pytest.raises(KeyError, match="layer"):
        paint.paint(spec, spec.params, z, "layer9", e)
    with pytest.raises(ValueError, match="needs the units' high levels"):
        paint.paint_edit([0], UNITS, np.ones((8, 8)), "on")
    with pytest.raises(ValueError, match="mode"):
        paint.paint_edit([0], UNITS, np.ones((8, 8)), "add")
    with pytest.raises(ValueError, match="units must lie"):
        paint.paint_edit([8], UNITS, np.ones((8, 8)), "off")
    with pytest.raises(ValueError, match="high levels"):
        paint.paint_edit([0, 1], UNITS, np.ones((8, 8)), "on", np.ones(3))


def test_concept_units_and_region_pixels():
    rng = np.random.default_rng(5)
    iou = rng.uniform(size=(10, 4))
    names = ["-", "tree", "door", "sky"]
    np.testing.assert_array_equal(paint.concept_units(iou, names, "door", 3),
                                  np.argsort(-iou[:, 2])[:3])
    np.testing.assert_array_equal(paint.concept_units(iou, names, 3, 20),
                                  np.argsort(-iou[:, 3]))
    with pytest.raises(KeyError, match="unknown concept 'car'"):
        paint.concept_units(iou, names, "car")
    with pytest.raises(KeyError, match="unknown concept"):
        paint.concept_units(iou, names, "-")
    seg = rng.integers(0, 4, size=(2, 3, 6, 6)).astype(np.int32)
    region = np.zeros((6, 6))
    region[1:4, 2:6] = 1
    got = np.asarray(paint.region_pixels(jnp.asarray(seg), 2, region))
    want = [((seg[b] == 2).any(0) & (region > 0.5)).sum() for b in range(2)]
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="differ"):
        paint.region_pixels(jnp.asarray(seg), 2, np.ones((5, 6)))


@pytest.mark.slow
def test_paint_source_sweep_equals_paint_on_any_device_count(gen):
    """The sweep (batches of 2 then 1, on 1 and 4 devices) paints what ``paint``
    paints, and counts each edit's label pixels in its region as NumPy does."""
    from jaxdissect.experiments.intervene import split_generator
    from tests.support.tiny_nets import ArraySource

    params, z = gen
    high = np.full(UNITS, 2.5, np.float32)
    m1 = paint.region_to_grid(paint.box_mask((16, 16), (0, 0, 0.5, 0.5)), (8, 8))
    m2 = paint.region_to_grid(np.random.default_rng(3).uniform(size=(3, 16, 16)), (8, 8))
    stack = paint.stack_edits([paint.paint_edit([0, 3], UNITS, m1, "on", high),
                               paint.paint_edit([2, 4, 7], UNITS, m2, "off")])
    spec = proggan.spec(MODEL, params)
    _, want = paint.paint(spec, spec.params, z, "layer4", stack)
    split = split_generator(spec, "layer4")

    def segment(images):            # 2 label layers from the image's channels
        return jnp.stack([1 + (images[..., 0] > 0), 3 * (images[..., 1] > 0.1)], 1)

    regions = np.stack([paint.box_mask((16, 16), (0, 0, 0.5, 0.5)),
                        paint.box_mask((16, 16), (0.5, 0, 1, 1))])
    outs = [paint.paint_source(split, ArraySource(z=z), stack, batch_size=2, chunk=1,
                               segment=segment, labels=[2, 3], regions=regions, devices=d)
            for d in (jax.local_devices()[:1], jax.local_devices())]
    for out in outs:
        # split_generator's tail gives the spec's images, (out + 1) / 2
        np.testing.assert_allclose(out["images"], (np.asarray(want) + 1) / 2, rtol=1e-4,
                                   atol=1e-5)
        for e, label in enumerate((2, 3)):
            for images, key in ((out["base"], "before"), (out["images"][e], "after")):
                seg = np.asarray(segment(jnp.asarray(images)))
                np.testing.assert_array_equal(
                    out[key][e], ((seg == label).any(1) & (regions[e] > 0.5)).sum((1, 2)))
    # (the generator's convolutions round differently at 1 and 2 latents per device)
    np.testing.assert_allclose(outs[0]["images"], outs[1]["images"], atol=1e-5)
