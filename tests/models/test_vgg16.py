"""Flax VGG-16 against a PyTorch module with the reference's layout (small widths:
fast; the full-size 224x224 / 365-class check through .pth files is in
test_checkpoints_models.py)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.checkpoints import convert_state_dict, model_from_config
from jaxdissect.edits import Edit, zero_units
from jaxdissect.models import VGG16, preprocess
from jaxdissect.models.vgg16 import adaptive_avg_pool
from jaxdissect.taps import run as tap
from tests.support.reference_torch import run_torch_vgg16, state_dict_numpy, torch_vgg16

SMALL = dict(widths=(4, 8, 8, 16, 16), fc_width=24, num_classes=7)


@pytest.fixture(scope="module")
def small():
    tm = torch_vgg16(**SMALL)
    config, params = convert_state_dict(state_dict_numpy(tm), "vgg16")
    return tm, model_from_config("vgg16", config), params


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a) - b)) / max(np.max(np.abs(b)), 1e-12))


def test_small_vgg_matches_torch_every_layer(small):
    tm, model, params = small
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    logits, acts = tap(model.apply, {"params": params}, x, capture=model.layer_names)
    t_logits, t_acts = run_torch_vgg16(tm, x)
    assert set(acts) == set(model.layer_names) == set(t_acts)
    for name in model.layer_names:
        assert acts[name].shape == t_acts[name].shape, name
        assert rel_err(acts[name], t_acts[name]) < 1e-4, name
    assert rel_err(logits, t_logits) < 1e-4


def test_edit_zeroing_matches_torch_channel_zeroing(small):
    tm, model, params = small
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
    units = [0, 3, 5]
    logits, acts = tap(model.apply, {"params": params}, x, capture=("conv5_3",),
                       edits={"conv5_3": zero_units(units, 16)})
    t_logits, t_acts = run_torch_vgg16(tm, x, zero_units={"conv5_3": units})
    assert np.all(np.asarray(acts["conv5_3"])[..., units] == 0)
    assert rel_err(logits, t_logits) < 1e-4
    plain = model.apply({"params": params}, x)
    assert rel_err(plain, t_logits) > 1e-3  # the edit changed something


def test_feed_resumes_from_cached_activations(small):
    _, model, params = small
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
    a = tap(model.apply, {"params": params}, x, capture="conv4_2")[1]["conv4_2"]
    assert a.shape == (2, 4, 4, 16)
    edit = {"conv4_2": zero_units([1], 16)}
    full, acts = tap(model.apply, {"params": params}, x, edits=edit, capture=("pool4",))
    resumed, acts2 = jax.jit(lambda a: tap(model.apply, {"params": params}, jnp.zeros_like(x),
                                           feed={"conv4_2": a}, edits=edit,
                                           capture=("pool4",)))(a)
    np.testing.assert_allclose(resumed, full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts2["pool4"], acts["pool4"], rtol=1e-5, atol=1e-6)


def test_bad_names_are_refused(small):
    _, model, params = small
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(KeyError, match="conv6_1.*conv5_3"):
        tap(model.apply, {"params": params}, x, capture=("conv6_1",))
    with pytest.raises(KeyError, match="relu5_3"):
        tap(model.apply, {"params": params}, x, edits={"relu5_3": zero_units([0], 16)})
    with pytest.raises(ValueError, match="does not fit its output"):
        tap(model.apply, {"params": params}, x, edits={"conv5_3": zero_units([0], 7)})


def test_vmap_over_edits_equals_separate_calls(small):
    _, model, params = small
    x = np.random.default_rng(3).normal(size=(2, 32, 32, 3)).astype(np.float32)
    stack = Edit(alpha=jnp.eye(16)[:6], value=jnp.zeros((6, 16)))
    run = jax.jit(lambda e: tap(model.apply, {"params": params}, x, edits={"conv5_3": e})[0])
    batched = jax.vmap(run)(stack)
    for u in range(6):
        np.testing.assert_allclose(batched[u], run(zero_units([u], 16)), rtol=1e-5, atol=1e-6)


def test_new_edit_values_do_not_recompile(small):
    _, model, params = small
    x = np.random.default_rng(5).normal(size=(1, 32, 32, 3)).astype(np.float32)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(p, e):
        return tap(model.apply, {"params": p}, x, edits={"conv5_3": e})[0]

    outs = [run(params, zero_units([u], 16)) for u in range(3)]
    assert not np.allclose(outs[0], outs[1])


def test_layer_geometry_gives_conv5_3_scale():
    m = VGG16()
    geo = m.layer_geometry("conv5_3")
    assert len(geo) == 13 + 4 and geo[0] == (3, 1, 1) and geo[2] == (2, 2, 0)
    size = 224  # output size formula over the geometry gives 14
    for k, s, p in geo:
        size = (size + 2 * p - k) // s + 1
    assert size == 14
    with pytest.raises(ValueError, match="fully connected"):
        m.layer_geometry("fc7")


def test_preprocess_is_imagenet_normalisation():
    img = np.random.default_rng(4).uniform(size=(2, 5, 5, 3)).astype(np.float32)
    want = (img - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(preprocess(jnp.asarray(img)), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [2, 3, 5, 7, 9, 14])
def test_adaptive_avg_pool_matches_torch(n):
    import torch
    x = np.random.default_rng(n).normal(size=(1, n, n + 1, 2)).astype(np.float32)
    want = torch.nn.AdaptiveAvgPool2d((7, 7))(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(adaptive_avg_pool(jnp.asarray(x), (7, 7)),
                               want.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)
