"""torchvision-layout ResNets against PyTorch modules with the published state-dict
layouts (random init, random BatchNorm statistics, real sizes), saved by torch.save in
both formats and read by jaxdissect's reader: logits and every research layer within
1e-4 relative, compared with forward hooks. The reference's numbered ResNet-152 layout;
the Places365 ``.pth.tar`` nesting (``{"state_dict": {"module.conv1.weight": ...}}``,
Python 2 pickles); strict errors."""

import jax
import numpy as np
import pytest
import torch

from jaxdissect.checkpoints import CheckpointMismatch, convert_state_dict, model_from_config
from jaxdissect.checkpoints.architectures import as_variables
from jaxdissect.checkpoints.convert import variable_shapes
from jaxdissect.checkpoints.pth import load_pth, load_state_dict
from jaxdissect.models import tv_resnet
from jaxdissect.models.tv_resnet import LAYER_NAMES, ResNet152, layer_geometry, oldresnet_module
from jaxdissect.stats.upsample import sequence_data_size
from tests.support.flax_capture import run_captured
from tests.support.torch_classifiers import (
    rel_err,
    run_hooked,
    save_both,
    save_places365_tar,
    torch_oldresnet,
    torch_resnet,
)

X = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
SHAPES_18 = {"conv1": (112, 112, 64), "relu": (112, 112, 64), "maxpool": (56, 56, 64),
             "layer1": (56, 56, 64), "layer2": (28, 28, 128), "layer3": (14, 14, 256),
             "layer4": (7, 7, 512), "avgpool": (1, 1, 512), "fc": (365,)}


def convert_both(paths):
    """Convert the zip and legacy files; they must give identical variables."""
    (cfg, var), (cfg2, var2) = (convert_state_dict(load_state_dict(paths[f]), "resnet")
                                for f in ("zip", "legacy"))
    assert cfg == cfg2
    leaves, leaves2 = (jax.tree_util.tree_leaves_with_path(v) for v in (var, var2))
    assert len(leaves) == len(leaves2)
    for (pa, a), (pb, b) in zip(leaves, leaves2):
        assert pa == pb and np.array_equal(a, b), pa
    return cfg, var


def check_parity(tm, cfg, variables, torch_paths):
    """Every research layer and the logits against torch forward hooks."""
    model = model_from_config("resnet", cfg)
    out, acts = run_captured(model, as_variables("resnet", variables), X, LAYER_NAMES)
    t_logits, t_acts = run_hooked(tm, X, torch_paths)
    assert rel_err(out, t_logits) < 1e-4
    for name in LAYER_NAMES:
        got = np.asarray(acts[name]).reshape(t_acts[name].shape)
        assert acts[name].shape[1:] == t_acts[name].shape[1:] or name == "avgpool", name
        assert rel_err(got, t_acts[name]) < 1e-4, name
    return acts


@pytest.mark.slow
@pytest.mark.parametrize("block,depths,width", [
    ("basic", (2, 2, 2, 2), 512),
    pytest.param("bottleneck", (3, 4, 6, 3), 2048, marks=pytest.mark.slow)])
def test_resnet18_and_50_match_torch_at_every_layer(tmp_path, block, depths, width):
    tm = torch_resnet(block, depths, num_classes=365, seed=1)
    cfg, variables = convert_both(save_both(tm.state_dict(), tmp_path, "resnet"))
    assert cfg == {"block": block, "depths": list(depths), "num_classes": 365}
    assert set(variables) == {"params", "batch_stats"}
    acts = check_parity(tm, cfg, variables, {n: n for n in LAYER_NAMES})
    mult = width // 512
    for name, shape in SHAPES_18.items():
        want = shape if name in ("conv1", "relu", "maxpool", "fc") else \
            shape[:-1] + (shape[-1] * mult,)
        assert acts[name].shape == (2,) + want, name


def test_resnet18_receptive_field_geometry_gives_the_map_sizes():
    model = model_from_config("resnet", {"block": "basic", "depths": [2, 2, 2, 2],
                                         "num_classes": 365})
    for name in ("conv1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
        assert sequence_data_size(layer_geometry(model, name), (224, 224)) == \
            SHAPES_18[name][:2], name
    assert layer_geometry(model, "fc") == layer_geometry(model, "layer4") + [(7, 1, 0)]
    with pytest.raises(KeyError, match="layer5"):
        layer_geometry(model, "layer5")


@pytest.mark.slow
def test_reference_resnet152_layout_small_depths_through_files(tmp_path):
    """The reference's numbered layout (``4.0.0.0.0.weight`` ...), at one block per
    stage so it runs fast; the full ResNet-152 is checked below."""
    tm = torch_oldresnet(depths=(1, 2, 1, 1), seed=2)
    cfg, variables = convert_both(save_both(tm.state_dict(), tmp_path, "old"))
    assert cfg == {"block": "bottleneck", "depths": [1, 2, 1, 1], "num_classes": 365}
    check_parity(tm, cfg, variables, {"conv1": "0", "relu": "2", "maxpool": "3",
                                      "layer1": "4", "layer2": "5", "layer3": "6",
                                      "layer4": "7", "avgpool": "8", "fc": "10.1"})


@pytest.mark.slow
def test_reference_resnet152_keys_are_exactly_the_table():
    """Every key and shape of the reference ResNet-152 state dict is one table entry."""
    sd = torch_oldresnet(seed=0).state_dict()
    want = {k: tuple(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    shapes = variable_shapes(ResNet152(num_classes=365), (1, 32, 32, 3))
    table = tv_resnet.ARCHITECTURE.table({"0.weight": 0, "10.1.weight": 0}, {}, shapes)
    # 155 convolutions (1 stem, 3 x 50 blocks, 4 skips), as many BatchNorms of 4 tensors, fc
    assert len(want) == len(table) == 155 + 4 * 155 + 2
    got = {src: path for path, (src, _) in table.items()}
    assert set(got) == set(want)
    assert table["params/layer3/35/conv3/kernel"] == ("6.35.0.0.6.weight", "conv")
    assert table["batch_stats/layer4/0/downsample/1/var"] == ("7.0.0.1.1.running_var", "copy")
    assert table["params/fc/weight"] == ("10.1.weight", "copy")
    with pytest.raises(ValueError, match="layer1.0.conv4"):
        oldresnet_module("layer1.0.conv4")


@pytest.mark.slow
def test_full_reference_resnet152_matches_torch(tmp_path):
    tm = torch_oldresnet(seed=3)
    path = tmp_path / "resnet152_places365.pth"
    torch.save(tm.state_dict(), path)
    cfg, variables = convert_state_dict(load_state_dict(path), "resnet")
    assert cfg == {"block": "bottleneck", "depths": [3, 8, 36, 3], "num_classes": 365}
    check_parity(tm, cfg, variables, {"conv1": "0", "relu": "2", "maxpool": "3",
                                      "layer1": "4", "layer2": "5", "layer3": "6",
                                      "layer4": "7", "avgpool": "8", "fc": "10.1"})


def test_places365_pth_tar_nesting_and_module_prefix(tmp_path):
    tm = torch_resnet("basic", (2, 2, 2, 2), num_classes=365, seed=4)
    path = save_places365_tar(tm.state_dict(), tmp_path / "resnet18_places365.pth.tar")
    raw = load_pth(path)
    assert raw["arch"] == "resnet18" and raw["epoch"] == 90
    assert "module.layer4.1.bn2.running_var" in raw["state_dict"]
    cfg, variables = convert_state_dict(load_state_dict(path), "resnet")
    assert cfg["depths"] == [2, 2, 2, 2]
    # The nesting is also undone when convert_state_dict gets the whole checkpoint.
    cfg2, variables2 = convert_state_dict(raw, "resnet")
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(variables2)):
        np.testing.assert_array_equal(a, b)
    model = model_from_config("resnet", cfg)
    np.testing.assert_allclose(jax.jit(model.apply)(variables, X[:1]),
                               run_hooked(tm, X[:1], {})[0], rtol=1e-4, atol=1e-4)


def test_strict_errors_name_every_problem():
    sd = {k: v.numpy() for k, v in torch_resnet("basic", (2, 2, 2, 2), seed=5).state_dict().items()}
    with pytest.raises(CheckpointMismatch, match="not a ResNet checkpoint.*'conv1.weight'"):
        convert_state_dict({"features.conv1_1.weight": np.zeros(3)}, "resnet")
    bad = dict(sd)
    del bad["layer2.1.bn1.running_mean"]
    bad["layer2.1.conv9.weight"] = np.zeros(3, np.float32)
    bad["fc.bias"] = np.zeros(7, np.float32)
    with pytest.raises(CheckpointMismatch) as err:
        convert_state_dict(bad, "resnet")
    msg = str(err.value)
    assert "- layer2.1.bn1.running_mean (for batch_stats/layer2/1/bn1/mean)" in msg
    assert "+ layer2.1.conv9.weight" in msg
    assert "! fc.bias: shape [7]" in msg and "needs [365]" in msg
    # A counter without its BatchNorm is not silently dropped.
    stray = dict(sd, **{"layer9.num_batches_tracked": np.zeros((), np.int64)})
    with pytest.raises(CheckpointMismatch, match=r"\+ layer9.num_batches_tracked"):
        convert_state_dict(stray, "resnet")
