"""Dissecting the converted architectures through their specs: a ViT's patch tokens as a
spatial grid (class token excluded) and fully connected layers as one value per image
give the thresholds and IoU of NumPy on the same activations laid out by hand. (The
activations come from separately compiled runs with other batch sizes, so they agree
to float rounding, not bit for bit: a pixel tied with a threshold may fall on either
side.)"""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.checkpoints import convert_state_dict, model_from_config
from jaxdissect.checkpoints.architectures import as_variables
from jaxdissect.experiments.dissect import dissect, spec_compute
from jaxdissect.models import alexnet, tv_resnet, vit
from jaxdissect.stats.upsample import Upsampler
from jaxdissect.world import WorldSource
from jaxdissect.world.vocab import LABELS
from tests.support.torch_classifiers import torch_alexnet_reference, torch_resnet, torch_vit
from tests.test_own_models import numpy_dissection


def converted_spec(tm, arch, factory):
    config, tree = convert_state_dict({k: v.numpy() for k, v in tm.state_dict().items()}, arch)
    return factory(model_from_config(arch, config), as_variables(arch, tree))


def by_hand(layer, acts):
    """The map a layer is dissected as, laid out in NumPy: tokens without the class
    token on their row-major grid; a ``[b, units]`` layer as one position."""
    acts = np.asarray(acts)
    if acts.ndim == 3:
        grid = int(round((acts.shape[1] - 1) ** 0.5))
        return acts[:, 1:].reshape(len(acts), grid, grid, acts.shape[-1])
    return acts[:, None, None, :] if acts.ndim == 2 else acts


def check(spec, layer, size, n=8, quantile=0.02):
    source = WorldSource(n, seed=5, size=size)
    batch = source.batch(0, n)
    f = by_hand(layer, spec.activations(spec.params, batch["image"], layer))
    up = spec.upsampler(layer, f.shape[1:3], (size, size))
    res = dissect(spec_compute(spec, layer, lambda b, images: b["seg"]), source, LABELS,
                  upsample=up, quantile=quantile, batch_size=4, progress=False,
                  params=spec.params)
    maps = spec_compute(spec, layer, lambda b, images: b["seg"])(batch, spec.params)[0]
    np.testing.assert_allclose(maps, f, rtol=1e-5, atol=1e-5 * np.abs(f).max())
    t, iou = numpy_dissection(np.asarray(up(jnp.asarray(f))), batch["seg"], quantile)
    np.testing.assert_allclose(res.thresholds, t, rtol=1e-5, atol=1e-6)
    assert np.abs(res.iou - iou).max() < 0.02 and np.abs(res.iou - iou).mean() < 1e-3
    assert iou.max() > 0.05  # some unit overlaps some concept: the comparison has content
    return f, res


@pytest.mark.slow
def test_vit_token_grid_dissects_as_numpy():
    spec = converted_spec(torch_vit(seed=3, image_size=64, depth=2, mlp_dim=32,
                                    num_classes=7), "vit", vit.spec)
    f, _ = check(spec, "encoder_layer_1", 64)
    assert f.shape == (8, 4, 4, 768)


@pytest.mark.slow
@pytest.mark.parametrize("arch,layer", [
    ("resnet", "fc"), pytest.param("resnet", "layer4", marks=pytest.mark.slow),
    ("alexnet", "fc6")])
def test_cnn_layers_dissect_as_numpy(arch, layer):
    if arch == "resnet":
        spec = converted_spec(torch_resnet("basic", (1, 1, 1, 1), num_classes=9, seed=1),
                              "resnet", tv_resnet.spec)
    else:
        spec = converted_spec(torch_alexnet_reference(seed=2, widths=(8, 16, 16, 16, 16),
                                                      fc_width=16), "alexnet", alexnet.spec)
    # One value per image: a unit is on over the whole of the images where it passes
    # its threshold, so the quantile must leave a few whole images above it.
    size = 128 if arch == "alexnet" else 64  # the world's size for large-input models
    f, _ = check(spec, layer, size, quantile=0.02 if layer == "layer4" else 0.3)
    assert f.shape[1:3] == ((2, 2) if layer == "layer4" else (1, 1))
    if layer != "layer4":  # fully connected: the upsampled map is constant per image
        up = np.asarray(Upsampler.plain((1, 1), (size, size))(jnp.asarray(f)))
        np.testing.assert_array_equal(up, np.broadcast_to(f, up.shape))
