"""Conversion tables: shape functions against the models' own (traced) parameters,
transforms against torch's layouts, and the old ProGAN key naming."""

import numpy as np
import pytest
import torch

from jaxdissect.checkpoints.architectures import model_from_config, traced_param_shapes
from jaxdissect.checkpoints.convert import apply_transform, flatten_params
from jaxdissect.checkpoints.tables import (
    proggan_shapes,
    proggan_table,
    rename_old_proggan_keys,
    vgg16_shapes,
    vgg16_table,
)
from jaxdissect.models import SIZES_BY_RESOLUTION


@pytest.mark.parametrize("config", [
    {"widths": [64, 128, 256, 512, 512], "fc_width": 4096, "num_classes": 365},
    {"widths": [4, 8, 8, 16, 32], "fc_width": 24, "num_classes": 1000},
])
def test_vgg_shapes_and_table_cover_the_model(config):
    traced = traced_param_shapes("vgg16", model_from_config("vgg16", config))
    assert vgg16_shapes(config) == traced
    assert set(vgg16_table()) == set(traced)


@pytest.mark.parametrize("sizes", [SIZES_BY_RESOLUTION[256], SIZES_BY_RESOLUTION[1024],
                                   (16, 16, 12, 8)])
def test_proggan_shapes_and_table_cover_the_model(sizes):
    traced = traced_param_shapes("proggan", model_from_config("proggan", {"sizes": sizes}))
    assert proggan_shapes(sizes) == traced
    assert set(proggan_table(sizes)) == set(traced)


def test_conv_transform_matches_torch_convolution():
    w = torch.randn(5, 3, 3, 3)
    x = torch.randn(1, 3, 6, 6)
    want = torch.nn.functional.conv2d(x, w).numpy().transpose(0, 2, 3, 1)
    k = apply_transform("conv", w.numpy())  # HWIO
    xn = x.numpy().transpose(0, 2, 3, 1)
    patches = np.stack([xn[0, i:i + 4, j:j + 4] for i in range(3) for j in range(3)])
    got = np.einsum("pyxi,pio->yxo", patches, k.reshape(9, 3, 5))[None]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_old_proggan_names_are_renamed():
    old = {"features.0.conv.weight": 1, "features.0.wscale.b": 2,
           "features.3.conv.weight": 3, "output.conv.weight": 4, "output.wscale.b": 5}
    for i in (1, 2):
        old[f"features.{i}.conv.weight"] = 0
    new = rename_old_proggan_keys(old)
    assert new["layer1.conv.weight"] == 1 and new["layer4.conv.weight"] == 3
    assert new["output_8x8.conv.weight"] == 4 and new["output_8x8.wscale.b"] == 5
    assert rename_old_proggan_keys({"layer1.conv.weight": 1}) == {"layer1.conv.weight": 1}


def test_flatten_round_trip():
    tree = {"a": {"b": np.zeros(2), "c": {"d": np.ones(1)}}}
    assert set(flatten_params(tree)) == {"a/b", "a/c/d"}
