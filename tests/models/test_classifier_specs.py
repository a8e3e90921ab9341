"""The ResNet, AlexNet and ViT model specs: every research layer captured through the
spec (taps at module paths, ImageNet normalisation inside) equals the torch module's
forward hooks on the same images; an edit at a layer equals torch with that hook
changing the layer's output; fully connected layers as 1x1 maps; ViT tokens on their
grid; upsamplers for every layer. Small variants of the published layouts (the
real-size parity is in tests/models/test_*.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxdissect.checkpoints import convert_state_dict, model_from_config
from jaxdissect.checkpoints.architectures import as_variables
from jaxdissect.cli import UserError
from jaxdissect.edits import Edit, zero_units
from jaxdissect.models import alexnet, tv_resnet, vit
from jaxdissect.models.vgg16 import IMAGENET_MEAN, IMAGENET_STD
from jaxdissect.pipeline import load_model
from tests.support.torch_classifiers import (
    rel_err,
    run_hooked,
    save_places365_tar,
    torch_alexnet_reference,
    torch_resnet,
    torch_vit,
)


def images(size, n=2, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)


def normalised(x01):
    return ((x01 - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32))


def converted_spec(tm, arch, factory, **kwargs):
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    config, tree = convert_state_dict(sd, arch)
    return factory(model_from_config(arch, config), as_variables(arch, tree), **kwargs)


def zero_channels_hook(units, last_axis=False):
    """A torch forward hook that zeroes ``units`` of the output (channels, or the last
    axis of tokens)."""
    def hook(_m, _inp, out):
        out = out.clone()
        if last_axis:
            out[..., units] = 0
        else:
            out[:, units] = 0
        return out
    return hook


def check_layers(spec, tm, x01, torch_paths):
    out, acts = jax.jit(lambda p, x: spec.run(p, x, capture=spec.layer_names))(spec.params, x01)
    t_logits, t_acts = run_hooked(tm, normalised(x01), torch_paths)
    assert rel_err(out, t_logits) < 1e-4
    for name in spec.layer_names:
        got = np.asarray(acts[name]).reshape(t_acts[name].shape)
        assert rel_err(got, t_acts[name]) < 1e-4, name
    return acts


def check_edit(spec, tm, x01, layer, torch_path, units, n_units, last_axis=False):
    edit = zero_units(units, n_units)
    run = jax.jit(lambda p, x, e: spec.run(p, x, capture=(layer,), edits={layer: e}))
    out, acts = run(spec.params, x01, edit)
    assert np.all(np.asarray(acts[layer])[..., units] == 0)
    handle = dict(tm.named_modules())[torch_path].register_forward_hook(
        zero_channels_hook(units, last_axis))
    try:
        t_logits = run_hooked(tm, normalised(x01), {})[0]
    finally:
        handle.remove()
    assert rel_err(out, t_logits) < 1e-4
    assert rel_err(run_hooked(tm, normalised(x01), {})[0], t_logits) > 1e-3  # it mattered


@pytest.mark.slow
def test_resnet_spec_layers_edits_and_maps():
    tm = torch_resnet("bottleneck", (1, 1, 1, 1), num_classes=20, seed=1)
    spec = converted_spec(tm, "resnet", tv_resnet.spec, name="resnet-test")
    assert spec.layer_names == tv_resnet.LAYER_NAMES and spec.default_layer == "layer4"
    x = images(224, n=1)
    acts = check_layers(spec, tm, x, {n: n for n in tv_resnet.LAYER_NAMES})
    check_edit(spec, tm, x, "layer3", "layer3", [0, 5, 700], 1024)
    assert spec.maps("fc", acts["fc"]).shape == (1, 1, 1, 20)
    assert spec.maps("avgpool", acts["avgpool"]).shape == (1, 1, 1, 2048)
    for name in ("relu", "layer2", "layer4"):
        up = spec.upsampler(name, acts[name].shape[1:3], (56, 56), mode="receptive-field")
        assert up(acts[name]).shape == (1, 56, 56, acts[name].shape[-1])
    up = spec.upsampler("fc", (1, 1), (56, 56), mode="receptive-field")
    whole = up(spec.maps("fc", acts["fc"]))
    np.testing.assert_allclose(whole, jnp.broadcast_to(acts["fc"][:, None, None], whole.shape),
                               rtol=1e-6)


def test_alexnet_spec_layers_edits_and_receptive_field_upsampling():
    tm = torch_alexnet_reference(seed=2, widths=(8, 16, 16, 16, 16), fc_width=16)
    spec = converted_spec(tm, "alexnet", alexnet.spec)
    assert spec.input_size == (227, 227) and spec.upsample == "receptive-field"
    assert spec.default_layer == "conv5"
    x = images(227)
    hooks = {**{f"conv{i}": f"relu{i}" for i in range(1, 6)}, "pool1": "pool1",
             "pool2": "pool2", "pool5": "pool5", "fc6": "relu6", "fc7": "relu7", "fc8": "fc8"}
    acts = check_layers(spec, tm, x, hooks)
    # Zeroing conv5 units after its ReLU, as a hook on the reference's relu5 does.
    check_edit(spec, tm, x, "conv5", "relu5", [1, 2, 9], 16)
    up = spec.upsampler("conv5", (13, 13), (56, 56))
    assert up(acts["conv5"]).shape == (2, 56, 56, 16)
    assert spec.maps("fc6", acts["fc6"]).shape == (2, 1, 1, 16)


@pytest.mark.slow
def test_vit_spec_token_grid_and_edits():
    tm = torch_vit(seed=3, image_size=64, depth=2, mlp_dim=32, num_classes=7)
    spec = converted_spec(tm, "vit", vit.spec)
    assert spec.input_size == (64, 64) and spec.default_layer == "encoder_layer_1"
    assert spec.layer_names == ("encoder_layer_0", "encoder_layer_1", "ln", "head")
    x = images(64)
    acts = check_layers(spec, tm, x, {"encoder_layer_0": "encoder.layers.encoder_layer_0",
                                      "encoder_layer_1": "encoder.layers.encoder_layer_1",
                                      "ln": "encoder.ln", "head": "heads.head"})
    grid = spec.maps("encoder_layer_1", acts["encoder_layer_1"])
    assert grid.shape == (2, 4, 4, 768)
    np.testing.assert_array_equal(grid[:, 2, 1], acts["encoder_layer_1"][:, 1 + 2 * 4 + 1])
    assert spec.maps("head", acts["head"]).shape == (2, 1, 1, 7)
    check_edit(spec, tm, x, "encoder_layer_0", "encoder.layers.encoder_layer_0",
               [3, 100, 767], 768, last_axis=True)
    # An edit on the patch map only (class token untouched) is an edit of [b, n, c].
    alpha = jnp.zeros((17, 768)).at[1:, 5].set(1.0)
    patch_edit = Edit(alpha=alpha, value=jnp.zeros((17, 768)))
    _, edited = jax.jit(lambda p, x, e: spec.run(p, x, capture=("encoder_layer_0",),
                                                 edits={"encoder_layer_0": e}))(
        spec.params, x, patch_edit)
    assert np.all(np.asarray(edited["encoder_layer_0"])[:, 1:, 5] == 0)
    np.testing.assert_allclose(edited["encoder_layer_0"][:, 0], acts["encoder_layer_0"][:, 0],
                               rtol=1e-5, atol=1e-5)
    assert spec.upsampler("encoder_layer_1", (4, 4), (64, 64))(grid).shape == (2, 64, 64, 768)


def test_specs_refuse_unknown_layers():
    tm = torch_resnet("basic", (1, 1, 1, 1), num_classes=3, seed=4)
    spec = converted_spec(tm, "resnet", tv_resnet.spec)
    with pytest.raises(KeyError, match="layer5"):  # traced only: nothing is computed
        jax.eval_shape(lambda p, x: spec.run(p, x, capture=("layer5",)), spec.params,
                       images(224, 1))


def test_command_model_spec_from_pth_files(tmp_path):
    """``--model FILE.pth`` / ``FILE.pth.tar``: the architecture is found from the file."""
    tm = torch_resnet("basic", (1, 1, 1, 1), num_classes=5, seed=5)
    path = save_places365_tar(tm.state_dict(), tmp_path / "resnet_places365.pth.tar")
    spec = load_model(str(path))
    assert spec.layer_names == tv_resnet.LAYER_NAMES and spec.default_layer == "layer4"
    x = images(224, n=1)
    out = jax.jit(lambda p, x: spec.run(p, x)[0])(spec.params, x)
    assert rel_err(out, run_hooked(tm, normalised(x), {})[0]) < 1e-4
    small_vit = torch_vit(seed=6, image_size=32, depth=1, mlp_dim=8, num_classes=3)
    torch.save(small_vit.state_dict(), tmp_path / "vit.pth")
    assert load_model(str(tmp_path / "vit.pth")).layer_names == (
        "encoder_layer_0", "ln", "head")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="other.pth: not a state dict of a known "
                                        "architecture.*looked for .*resnet: conv1.weight"):
        load_model(str(tmp_path / "other.pth"))
