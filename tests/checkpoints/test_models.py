"""Full-size parity through .pth files: PyTorch modules with the reference's state-dict
layout, randomly initialised, saved in both formats, read by jaxdissect (no torch),
converted and run in Flax. VGG-16 at 224x224 with 365 classes; ProGAN at the published
256x256 size; edits against torch channel zeroing; vmap over 16 ablations; errors for
the wrong architecture; orbax round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxdissect.checkpoints import CheckpointMismatch, convert_state_dict, model_from_config
from jaxdissect.checkpoints.pth import load_state_dict
from jaxdissect.checkpoints.store import load_converted, save_converted
from jaxdissect.edits import Edit, zero_units
from jaxdissect.models import SIZES_BY_RESOLUTION
from jaxdissect.taps import run as tap
from tests.support.reference_torch import (
    run_torch_proggan,
    run_torch_vgg16,
    torch_proggan,
    torch_vgg16,
)

FORMATS = {"zip": True, "legacy": False}


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a) - b)) / max(np.max(np.abs(b)), 1e-12))


def save_both(model, directory, stem):
    paths = {}
    for fmt, zipped in FORMATS.items():
        paths[fmt] = directory / f"{stem}_{fmt}.pth"
        torch.save(model.state_dict(), paths[fmt], _use_new_zipfile_serialization=zipped)
    return paths


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    tm = torch_vgg16(num_classes=365, seed=1)
    paths = save_both(tm, tmp_path_factory.mktemp("vgg"), "vgg16")
    converted = {fmt: convert_state_dict(load_state_dict(p), "vgg16") for fmt, p in paths.items()}
    config, params = converted["zip"]
    x = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
    model = model_from_config("vgg16", config)
    # One compiled forward for every full-size call: the edit is an argument.
    forward = jax.jit(lambda p, x, e: tap(model.apply, {"params": p}, x,
                                          capture=model.layer_names, edits={"conv5_3": e}))
    return dict(torch=tm, paths=paths, converted=converted, config=config, params=params,
                model=model, forward=forward, x=x, torch_out=run_torch_vgg16(tm, x))


def no_edit(units=512):
    return Edit(alpha=jnp.zeros((units,)), value=jnp.zeros((units,)))


@pytest.mark.slow
def test_vgg_config_read_from_file(vgg):
    assert vgg["config"] == {"widths": [64, 128, 256, 512, 512], "fc_width": 4096,
                             "num_classes": 365}


def test_both_formats_give_the_same_params(vgg):
    flat = jax.tree_util.tree_leaves_with_path
    zip_leaves = flat(vgg["converted"]["zip"][1])
    legacy_leaves = flat(vgg["converted"]["legacy"][1])
    assert vgg["converted"]["legacy"][0] == vgg["config"]
    assert len(zip_leaves) == len(legacy_leaves) == 32
    for (pa, a), (pb, b) in zip(zip_leaves, legacy_leaves):
        assert pa == pb and a.shape == b.shape and np.array_equal(a, b), pa


def test_full_vgg16_matches_torch_logits_and_every_activation(vgg):
    model = vgg["model"]
    logits, acts = vgg["forward"](vgg["params"], vgg["x"], no_edit())
    t_logits, t_acts = vgg["torch_out"]
    assert logits.shape == (1, 365) and acts["conv5_3"].shape == (1, 14, 14, 512)
    for name in model.layer_names:
        assert acts[name].shape == t_acts[name].shape, name
        assert rel_err(acts[name], t_acts[name]) < 1e-4, name
    assert rel_err(logits, t_logits) < 1e-4


def test_zeroing_conv5_3_units_equals_torch_channel_zeroing(vgg):
    units = [3, 17, 200, 511]
    logits, acts = vgg["forward"](vgg["params"], vgg["x"], zero_units(units, 512))
    assert np.all(np.asarray(acts["conv5_3"])[..., units] == 0)
    t_logits, t_acts = run_torch_vgg16(vgg["torch"], vgg["x"], zero_units={"conv5_3": units})
    assert rel_err(acts["fc7"], t_acts["fc7"]) < 1e-4
    assert rel_err(logits, t_logits) < 1e-4
    assert rel_err(vgg["torch_out"][0], t_logits) > 1e-4  # the ablation mattered


@pytest.mark.slow
def test_vmap_over_16_single_unit_ablations_equals_16_calls(vgg):
    model, params = vgg["model"], vgg["params"]
    conv5_3 = jnp.asarray(vgg["torch_out"][1]["conv5_3"])
    # Params are arguments, not closed-over constants, so the 528 MB stay out of the
    # compiled program.
    x = jnp.zeros((1, 224, 224, 3))      # a placeholder: the layers before conv5_3 vanish
    run = jax.jit(lambda p, e: tap(model.apply, {"params": p}, x, feed={"conv5_3": conv5_3},
                                   edits={"conv5_3": e})[0])
    units = np.arange(0, 512, 32)
    stack = Edit(alpha=jnp.eye(512)[units], value=jnp.zeros((16, 512)))
    batched = jax.jit(jax.vmap(run, in_axes=(None, 0)))(params, stack)
    assert batched.shape == (16, 1, 365)
    for i, u in enumerate(units):
        np.testing.assert_allclose(batched[i], run(params, zero_units([u], 512)),
                                   rtol=1e-5, atol=1e-6)


def test_orbax_round_trip(tmp_path):
    tm = torch_vgg16(widths=(4, 8, 8, 16, 16), fc_width=32, num_classes=365, seed=3)
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    config, params = convert_state_dict(sd, "vgg16")
    out = save_converted(tmp_path / "vgg", "vgg16", config, params, source={"file": "test"})
    model, restored, meta = load_converted(out)
    assert meta["arch"] == "vgg16" and model == model_from_config("vgg16", config)
    for (pa, a), (pb, b) in zip(jax.tree_util.tree_leaves_with_path(params),
                                jax.tree_util.tree_leaves_with_path(restored)):
        assert pa == pb
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(5).normal(size=(1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model.apply({"params": restored}, x),
                               run_torch_vgg16(tm, x)[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(FileExistsError, match="already holds"):
        save_converted(out, "vgg16", config, params)


@pytest.fixture(scope="module")
def progan(tmp_path_factory):
    sizes = SIZES_BY_RESOLUTION[256]
    tm = torch_proggan(sizes, seed=2)
    directory = tmp_path_factory.mktemp("progan")
    paths = save_both(tm, directory, "proggan")
    # The older naming the reference's loader also accepts.
    old = {}
    for k, v in tm.state_dict().items():
        head, rest = k.split(".", 1)
        old[f"features.{int(head[5:]) - 1}.{rest}" if head.startswith("layer")
            else f"output.{rest}"] = v
    paths["old_names"] = directory / "proggan_old.pth"
    torch.save(old, paths["old_names"], _use_new_zipfile_serialization=False)
    z = np.random.default_rng(1).normal(size=(1, 512)).astype(np.float32)
    return dict(torch=tm, paths=paths, z=z, torch_out=run_torch_proggan(tm, z))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["zip", "legacy", "old_names"])
def test_full_proggan_256_matches_torch(progan, fmt):
    config, params = convert_state_dict(load_state_dict(progan["paths"][fmt]), "proggan")
    assert config == {"sizes": [512, 512, 512, 512, 256, 128, 64, 32]}
    model = model_from_config("proggan", config)
    if fmt != "zip":  # same params as the zip file; one forward run suffices
        ref = convert_state_dict(load_state_dict(progan["paths"]["zip"]), "proggan")[1]
        for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref)):
            np.testing.assert_array_equal(a, b)
        return
    img, acts = jax.jit(lambda p, z: tap(model.apply, {"params": p}, z, capture=("layer4",)))(
        params, progan["z"])
    t_img, t_acts = progan["torch_out"]
    assert img.shape == (1, 256, 256, 3)
    np.testing.assert_allclose(img, t_img, rtol=0, atol=1e-4)
    assert rel_err(acts["layer4"], t_acts["layer4"]) < 1e-4


def test_wrong_architecture_names_the_problem(vgg, progan):
    with pytest.raises(CheckpointMismatch, match="not a ProGAN generator checkpoint"):
        convert_state_dict(load_state_dict(vgg["paths"]["zip"]), "proggan")
    with pytest.raises(CheckpointMismatch, match="not a VGG-16 checkpoint.*features.conv1_2"):
        convert_state_dict(load_state_dict(progan["paths"]["zip"]), "vgg16")


def test_strict_check_lists_missing_unexpected_and_misshaped(vgg):
    sd = dict(load_state_dict(vgg["paths"]["zip"]))
    del sd["features.conv3_2.bias"]
    sd["features.conv9_9.weight"] = np.zeros(3, np.float32)
    sd["classifier.fc7.bias"] = np.zeros(17, np.float32)
    with pytest.raises(CheckpointMismatch) as err:
        convert_state_dict(sd, "vgg16")
    msg = str(err.value)
    assert "- features.conv3_2.bias" in msg
    assert "+ features.conv9_9.weight" in msg
    assert "! classifier.fc7.bias: shape [17] in the checkpoint (as vgg16), model needs [4096]" \
        in msg
