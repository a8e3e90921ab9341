"""Conversion tables: each architecture's table covers the variables its model traces,
transforms against torch's layouts, and the old ProGAN key naming."""

import numpy as np
import pytest
import torch

from jaxdissect.checkpoints.architectures import expected_shapes, model_from_config
from jaxdissect.checkpoints.convert import apply_transform, flatten_params, variable_shapes
from jaxdissect.models import SIZES_BY_RESOLUTION, proggan, vgg16


@pytest.mark.parametrize("config", [
    {"widths": [64, 128, 256, 512, 512], "fc_width": 4096, "num_classes": 365},
    {"widths": [4, 8, 8, 16, 32], "fc_width": 24, "num_classes": 1000},
])
def test_vgg_table_covers_the_model(config):
    shapes = variable_shapes(model_from_config("vgg16", config), (1, 32, 32, 3))
    table = vgg16.ARCHITECTURE.table({}, config, shapes)
    assert set(table) == set(shapes)
    assert table["params/conv5_3/kernel"] == ("features.conv5_3.weight", "conv")
    assert table["params/fc8a/weight"] == ("classifier.fc8a.weight", "copy")
    w = config["widths"][-1]
    assert expected_shapes("vgg16", config)["fc6/weight"] == (config["fc_width"], w * 49)


@pytest.mark.parametrize("sizes", [SIZES_BY_RESOLUTION[256], SIZES_BY_RESOLUTION[1024],
                                   (16, 16, 12, 8)])
def test_proggan_table_covers_the_model(sizes):
    shapes = variable_shapes(model_from_config("proggan", {"sizes": sizes}), (1, sizes[0]))
    table = proggan.ARCHITECTURE.table({}, {"sizes": sizes}, shapes)
    assert set(table) == set(shapes)
    assert table["params/layer1/kernel"] == ("layer1.conv.weight", "conv")
    assert table["params/layer1/bias"] == ("layer1.wscale.b", "copy")
    assert expected_shapes("proggan", {"sizes": sizes})["layer1/kernel"] == (
        4, 4, sizes[0], sizes[1])


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
    new = proggan.rename_old_keys(old)
    assert new["layer1.conv.weight"] == 1 and new["layer4.conv.weight"] == 3
    assert new["output_8x8.conv.weight"] == 4 and new["output_8x8.wscale.b"] == 5
    assert proggan.rename_old_keys({"layer1.conv.weight": 1}) == {"layer1.conv.weight": 1}


def test_flatten_round_trip():
    tree = {"a": {"b": np.zeros(2), "c": {"d": np.ones(1)}}}
    assert set(flatten_params(tree)) == {"a/b", "a/c/d"}
