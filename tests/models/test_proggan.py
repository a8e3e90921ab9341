"""Flax ProgressiveGenerator against a PyTorch module with the reference's layout
(small sizes here; the full published 256x256 size through .pth files is in
test_checkpoints_models.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.checkpoints import convert_state_dict
from jaxdissect.edits import Edit, zero_units
from jaxdissect.models import ProgressiveGenerator
from jaxdissect.models.proggan import progan_layer_names
from jaxdissect.taps import run as tap
from tests.support.reference_torch import run_torch_proggan, state_dict_numpy, torch_proggan

SIZES = (16, 16, 12, 8, 4)  # 32x32 output


@pytest.fixture(scope="module")
def small():
    tm = torch_proggan(SIZES)
    config, params = convert_state_dict(state_dict_numpy(tm), "proggan")
    assert tuple(config["sizes"]) == SIZES
    return tm, ProgressiveGenerator(sizes=SIZES), params


def test_layer_names_follow_reference():
    assert progan_layer_names((512,) * 4 + (256, 128, 64, 32)) == tuple(
        f"layer{i}" for i in range(1, 15)) + ("output_256x256",)
    g = ProgressiveGenerator(sizes=(512,) * 5 + (256, 128, 64, 32, 16))
    assert g.resolution == 1024 and g.layer_names[-1] == "output_1024x1024"


def test_small_proggan_matches_torch_every_layer(small):
    tm, model, params = small
    z = np.random.default_rng(0).normal(size=(2, 16)).astype(np.float32)
    img, acts = tap(model.apply, {"params": params}, z, capture=model.layer_names)
    t_img, t_acts = run_torch_proggan(tm, z)
    assert img.shape == (2, 32, 32, 3)
    for name in model.layer_names:
        np.testing.assert_allclose(acts[name], t_acts[name], rtol=1e-4, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(img, t_img, rtol=1e-4, atol=1e-4)


def test_start_from_layer4_with_edit_equals_full_run(small):
    _, model, params = small
    z = np.random.default_rng(1).normal(size=(2, 16)).astype(np.float32)
    l4 = tap(model.apply, {"params": params}, z, capture="layer4")[1]["layer4"]
    assert l4.shape == (2, 8, 8, 12)
    edit = {"layer4": zero_units([0, 2], 12)}
    full, _ = tap(model.apply, {"params": params}, z, edits=edit)
    resumed, _ = tap(model.apply, {"params": params}, z, feed={"layer4": l4}, edits=edit)
    np.testing.assert_allclose(resumed, full, rtol=1e-5, atol=1e-5)


def test_vmap_over_edits_equals_separate_calls(small):
    _, model, params = small
    z = np.random.default_rng(2).normal(size=(2, 16)).astype(np.float32)
    stack = Edit(alpha=jnp.eye(12)[:4], value=jnp.full((4, 12), 3.0))
    run = jax.jit(lambda e: tap(model.apply, {"params": params}, z, edits={"layer4": e})[0])
    batched = jax.vmap(run)(stack)
    for u in range(4):
        one = Edit(alpha=jnp.eye(12)[u], value=jnp.full((12,), 3.0))
        np.testing.assert_allclose(batched[u], run(one), rtol=1e-5, atol=1e-5)


def test_wrong_z_shape_is_refused(small):
    _, model, params = small
    with pytest.raises(ValueError, match=r"z must be \[batch, 16\]"):
        model.apply({"params": params}, jnp.zeros((2, 8)))
