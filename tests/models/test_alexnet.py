"""AlexNet in both layouts against PyTorch modules with the published state-dict layouts
(random init, real sizes), saved by torch.save in both formats and read by jaxdissect's
reader: logits and every research layer within 1e-4 relative, compared with forward
hooks (the reference's ``conv5`` is its in-place-rectified output, so the hook is on
``relu5``)."""

import jax
import numpy as np
import pytest
import torch

from jaxdissect.checkpoints import CheckpointMismatch, convert_state_dict, model_from_config
from jaxdissect.checkpoints.architectures import as_variables
from jaxdissect.checkpoints.pth import load_state_dict
from jaxdissect.models.alexnet import LAYER_NAMES, LocalResponseNorm, layer_geometry
from jaxdissect.stats.upsample import sequence_data_size
from tests.support.flax_capture import run_captured
from tests.support.torch_classifiers import (
    rel_err,
    run_hooked,
    save_both,
    torch_alexnet_reference,
    torch_alexnet_torchvision,
)

REFERENCE_HOOKS = {**{f"conv{i}": f"relu{i}" for i in range(1, 6)},
                   "pool1": "pool1", "pool2": "pool2", "pool5": "pool5",
                   "fc6": "relu6", "fc7": "relu7", "fc8": "fc8"}
TORCHVISION_HOOKS = {"conv1": "features.1", "pool1": "features.2", "conv2": "features.4",
                     "pool2": "features.5", "conv3": "features.7", "conv4": "features.9",
                     "conv5": "features.11", "pool5": "features.12", "fc6": "classifier.2",
                     "fc7": "classifier.5", "fc8": "classifier.6"}
REFERENCE_SHAPES = {"conv1": (55, 55, 96), "pool1": (27, 27, 96), "conv2": (27, 27, 256),
                    "pool2": (13, 13, 256), "conv3": (13, 13, 384), "conv4": (13, 13, 384),
                    "conv5": (13, 13, 256), "pool5": (6, 6, 256), "fc6": (4096,),
                    "fc7": (4096,), "fc8": (365,)}


def convert_and_compare(tm, tmp_path, size, hooks):
    paths = save_both(tm.state_dict(), tmp_path, "alexnet")
    (cfg, var), (cfg2, var2) = (convert_state_dict(load_state_dict(paths[f]), "alexnet")
                                for f in ("zip", "legacy"))
    assert cfg == cfg2
    for a, b in zip(jax.tree_util.tree_leaves(var), jax.tree_util.tree_leaves(var2)):
        np.testing.assert_array_equal(a, b)
    model = model_from_config("alexnet", cfg)
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    out, acts = run_captured(model, as_variables("alexnet", var), x, LAYER_NAMES)
    t_logits, t_acts = run_hooked(tm, x, hooks)
    assert rel_err(out, t_logits) < 1e-4
    for name in LAYER_NAMES:
        assert acts[name].shape == t_acts[name].shape, name
        assert rel_err(acts[name], t_acts[name]) < 1e-4, name
    return cfg, model, acts


@pytest.mark.slow
def test_reference_places365_alexnet_matches_torch(tmp_path):
    cfg, model, acts = convert_and_compare(torch_alexnet_reference(seed=1), tmp_path, 227,
                                           REFERENCE_HOOKS)
    assert cfg["widths"] == [96, 256, 384, 384, 256] and cfg["groups"] == [1, 2, 1, 2, 2]
    assert cfg["lrn"] is True and cfg["num_classes"] == 365
    for name, shape in REFERENCE_SHAPES.items():
        assert acts[name].shape == (2,) + shape, name
    for name in LAYER_NAMES[:8]:
        assert sequence_data_size(layer_geometry(model, name), (227, 227)) == \
            REFERENCE_SHAPES[name][:2], name
    assert sequence_data_size(layer_geometry(model, "fc7"), (227, 227)) == (1, 1)


def test_torchvision_alexnet_matches_torch(tmp_path):
    cfg, model, acts = convert_and_compare(torch_alexnet_torchvision(seed=2), tmp_path, 224,
                                           TORCHVISION_HOOKS)
    assert cfg["widths"] == [64, 192, 384, 256, 256] and cfg["groups"] == [1, 1, 1, 1, 1]
    assert cfg["lrn"] is False and cfg["num_classes"] == 1000
    assert acts["conv5"].shape == (2, 13, 13, 256)
    for name in ("conv1", "pool2", "conv5", "pool5"):
        assert sequence_data_size(layer_geometry(model, name), (224, 224)) == \
            acts[name].shape[1:3], name


def test_lrn_equals_numpy_definition():
    x = np.random.default_rng(3).normal(size=(2, 3, 4, 9)).astype(np.float32)
    got = LocalResponseNorm().apply({}, x)
    sq = np.pad(x.astype(np.float64) ** 2, ((0, 0), (0, 0), (0, 0), (2, 2)))
    mean = np.stack([sq[..., c:c + 5].sum(-1) for c in range(9)], -1) / 5
    np.testing.assert_allclose(got, x / (1 + 1e-4 * mean) ** 0.75, rtol=1e-6)


def test_other_input_sizes_pool_pool5_adaptively():
    """The reference layout at 224x224 (pool5 5x5): pool5 is pooled to 6x6 as torch's
    ``AdaptiveAvgPool2d(6)`` pools it."""
    tm = torch_alexnet_reference(seed=5, widths=(8, 16, 16, 16, 16), fc_width=8)
    cfg, var = convert_state_dict({k: v.numpy() for k, v in tm.state_dict().items()},
                                  "alexnet")
    assert cfg["image_size"] == 227
    x = np.random.default_rng(1).normal(size=(1, 224, 224, 3)).astype(np.float32)
    got = jax.jit(model_from_config("alexnet", cfg).apply)(var, x)
    with torch.no_grad():
        h = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        for name, m in tm.named_children():
            if name == "flatten":
                h = torch.nn.functional.adaptive_avg_pool2d(h, 6).flatten(1)
            else:
                h = m(h)
    assert rel_err(got, h.numpy()) < 1e-4
    with pytest.raises(ValueError, match="a 64x64 input is too small for this AlexNet"):
        jax.eval_shape(model_from_config("alexnet", cfg).init, jax.random.key(0),
                       np.zeros((1, 64, 64, 3), np.float32))


def test_wrong_file_is_a_clear_error():
    with pytest.raises(CheckpointMismatch, match="not an AlexNet checkpoint"):
        convert_state_dict({"conv_proj.weight": np.zeros((4, 3, 2, 2))}, "alexnet")
    small = torch_alexnet_reference(seed=4, widths=(8, 16, 16, 16, 16), fc_width=8)
    sd = {k: v.numpy() for k, v in small.state_dict().items()}
    del sd["conv4.bias"]
    with pytest.raises(CheckpointMismatch, match=r"- conv4.bias \(for params/conv4/bias\)"):
        convert_state_dict(sd, "alexnet")
