"""AlexNet in Flax (NHWC), in the two layouts researchers dissect.

* ``reference``: the reference's Places365 AlexNet (netdissect
  ``experiment/oldalexnet.py``, the Caffe network): widths 96-256-384-384-256,
  ``conv2``/``conv4``/``conv5`` split into two groups, local response normalisation
  after ``pool1`` and ``pool2``, ``conv1`` unpadded, input 227x227 (so ``pool5`` is
  6x6), classifier ``fc8``.
* ``torchvision``: ``torchvision.models.alexnet``: widths 64-192-384-256-256, no groups
  and no LRN, ``conv1`` padded by 2, input 224x224, an adaptive average pool to 6x6
  before ``fc6``.

Both are the same module with different fields (:data:`REFERENCE`,
:data:`TORCHVISION`, the config :data:`ARCHITECTURE` reads from either state dict's
names and shapes); :data:`TORCHVISION_NAMES` maps torchvision's module names onto the
reference's. Both pool ``pool5`` adaptively to 6x6 before ``fc6``: the identity at
the size each was trained at (``image_size``), and what lets the reference layout,
which has no such pool, take other sizes (the world's 128x128 images) as VGG-16 does.

Research layers (each a module path) are the reference's names, with its in-place
ReLU: ``conv1`` .. ``conv5`` are the rectified convolution outputs (a hook on the
reference's ``conv5`` records them), ``pool1``, ``pool2``, ``pool5`` the pools,
``fc6``, ``fc7`` rectified ``[b, 4096]``, ``fc8`` the logits ``[b, num_classes]``.
For the reference layout at 227x227: ``conv1`` ``[b, 55, 55, 96]``, ``conv2``
``[b, 27, 27, 256]``, ``conv3``-``conv5`` ``[b, 13, 13, .]``, ``pool5`` ``[b, 6, 6, 256]``.
Dropout is the identity at evaluation and is not a layer here.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdissect.checkpoints.architectures import Architecture, register, tuples
from jaxdissect.checkpoints.convert import CheckpointMismatch, dim_of, torch_name_table
from jaxdissect.models.layers import ConvReLU, MaxPool, flatten_nchw
from jaxdissect.models.vgg16 import LinearOI, adaptive_avg_pool

#: Research layer names, input first.
LAYER_NAMES = ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5",
               "fc6", "fc7", "fc8")
KERNELS = (11, 5, 3, 3, 3)


class LocalResponseNorm(nn.Module):
    """Across-channel LRN (Caffe's, as the reference's ``LRN`` and PyTorch's
    ``LocalResponseNorm``): ``x / (k + alpha * mean_{size channels} x^2) ** beta``, the
    window zero-padded and always divided by ``size``. ``[b, h, w, c]``."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0

    def __call__(self, x):
        half = (self.size - 1) // 2
        sq = jnp.pad(x * x, ((0, 0), (0, 0), (0, 0), (half, self.size - 1 - half)))
        window = jax.lax.reduce_window(sq, 0.0, jax.lax.add, (1, 1, 1, self.size),
                                       (1, 1, 1, 1), "VALID")
        return x / (self.k + self.alpha * window / self.size) ** self.beta


class AlexNet(nn.Module):
    """``model.apply({"params": p}, x)``: ``x [b, H, W, 3]`` ImageNet-normalised ->
    logits ``[b, num_classes]``. Defaults are the reference layout."""

    widths: Sequence[int] = (96, 256, 384, 384, 256)
    groups: Sequence[int] = (1, 2, 1, 2, 2)
    conv1_padding: int = 0
    lrn: bool = True
    image_size: int = 227     # the input size it was trained at (its spec's input size)
    fc_width: int = 4096
    num_classes: int = 365

    @nn.compact
    def __call__(self, x):
        size = x.shape[1:3]
        for i, (width, groups, k) in enumerate(zip(self.widths, self.groups, KERNELS), 1):
            pad = self.conv1_padding if i == 1 else k // 2
            x = ConvReLU(width, (k, k), strides=4 if i == 1 else 1,
                         padding=((pad, pad), (pad, pad)), feature_group_count=groups,
                         name=f"conv{i}")(x)
            if i in (1, 2, 5):
                x = MaxPool(3, 2, name=f"pool{i}")(x)
            if i in (1, 2) and self.lrn:
                x = LocalResponseNorm(name=f"lrn{i}")(x)
        if min(x.shape[1:3]) < 1:
            raise ValueError(f"a {size[0]}x{size[1]} input is too small for this AlexNet "
                             f"(pool5 is empty; it was trained at {self.image_size}x"
                             f"{self.image_size})")
        x = adaptive_avg_pool(x, (6, 6))
        x = LinearOI(self.fc_width, relu=True, name="fc6")(flatten_nchw(x))
        x = LinearOI(self.fc_width, relu=True, name="fc7")(x)
        return LinearOI(self.num_classes, name="fc8")(x)


REFERENCE = dict(widths=(96, 256, 384, 384, 256), groups=(1, 2, 1, 2, 2), conv1_padding=0,
                 lrn=True, image_size=227)
TORCHVISION = dict(widths=(64, 192, 384, 256, 256), groups=(1, 1, 1, 1, 1), conv1_padding=2,
                   lrn=False, image_size=224)

AlexNetPlaces365 = functools.partial(AlexNet, **REFERENCE, num_classes=365)
AlexNetTorchvision = functools.partial(AlexNet, **TORCHVISION, num_classes=1000)


def layer_geometry(model: AlexNet, layer: str) -> list[tuple[int, int, int]]:
    """``(kernel, stride, padding)`` of each convolution and pool from the input up to
    ``layer``, for receptive-field-aligned upsampling. ``fc6``-``fc8`` add a 6x6 kernel
    over ``pool5`` (what ``fc6`` is): one position, which upsampling spreads over the
    whole image."""
    if layer not in LAYER_NAMES:
        raise KeyError(f"{layer!r} is not a layer; known layers: {list(LAYER_NAMES)}")
    if layer.startswith("fc"):
        return layer_geometry(model, "pool5") + [(6, 1, 0)]
    geometry = []
    for name in LAYER_NAMES[: LAYER_NAMES.index(layer) + 1]:
        if name.startswith("pool"):
            geometry.append((3, 2, 0))
        else:
            i = int(name[4:])
            k = KERNELS[i - 1]
            geometry.append((k, 4, model.conv1_padding) if i == 1 else (k, 1, k // 2))
    return geometry


def spec(model: AlexNet, variables, *, name: str = "alexnet", class_names=None,
         input_size=None, resize: str = "resize-crop", upsample: str = "receptive-field"):
    """A :class:`~jaxdissect.spec.ModelSpec` for an AlexNet: the research layers,
    ``conv5`` by default, ImageNet normalisation, input ``model.image_size`` (227 for
    the reference layout, 224 for torchvision's), and receptive-field upsampling from each layer's
    convolutions and pools, as the reference dissects AlexNet. ``fc6``-``fc8`` are one
    value per image (a 1x1 map)."""
    from jaxdissect.models.vgg16 import preprocess
    from jaxdissect.spec import ModelSpec
    if input_size is None:
        input_size = (model.image_size, model.image_size)
    return ModelSpec.from_linen(
        model, variables, kind="classifier", name=name, layers={n: n for n in LAYER_NAMES},
        default_layer="conv5", input_size=tuple(input_size), preprocess=preprocess,
        resize=resize, class_names=None if class_names is None else tuple(class_names),
        geometry={n: tuple(layer_geometry(model, n)) for n in LAYER_NAMES}, upsample=upsample)


# ---------------------------------------------------------------- state dicts

#: the reference's module names -> torchvision's
TORCHVISION_NAMES = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6",
                     "conv4": "features.8", "conv5": "features.10",
                     "fc6": "classifier.1", "fc7": "classifier.4", "fc8": "classifier.6"}


def layout(state_dict) -> str:
    """``"reference"`` (``conv1.weight`` ...) or ``"torchvision"`` (``features.0.weight``)."""
    if "conv1.weight" in state_dict:
        return "reference"
    if "features.0.weight" in state_dict:
        return "torchvision"
    raise CheckpointMismatch(
        "not an AlexNet checkpoint: no key 'conv1.weight' (reference layout) nor "
        f"'features.0.weight' (torchvision layout); found keys like {sorted(state_dict)[:4]}")


def read_config(state_dict) -> dict:
    """``AlexNet`` constructor arguments read from a state dict of either layout
    (widths and groups from the convolution weights, ``[out, in / groups, k, k]``)."""
    reference = layout(state_dict) == "reference"
    name = (lambda m: m) if reference else TORCHVISION_NAMES.__getitem__
    widths, groups, cin = [], [], 3
    for i in range(1, 6):
        key = f"{name(f'conv{i}')}.weight"
        if key not in state_dict:
            raise CheckpointMismatch(f"not an AlexNet checkpoint: no key {key!r}")
        widths.append(dim_of(state_dict, key, 0, 4))
        groups.append(max(cin // max(dim_of(state_dict, key, 1, 4), 1), 1))
        cin = widths[-1]
    for fc in ("fc7", "fc8"):
        if f"{name(fc)}.weight" not in state_dict:
            raise CheckpointMismatch(f"not an AlexNet checkpoint: no key {name(fc)}.weight")
    return {**(REFERENCE if reference else TORCHVISION), "widths": tuple(widths),
            "groups": tuple(groups),
            "fc_width": dim_of(state_dict, f"{name('fc7')}.weight", 0, 2),
            "num_classes": dim_of(state_dict, f"{name('fc8')}.weight", 0, 2)}


def _table(state_dict, config, shapes):
    if layout(state_dict) == "reference":
        return torch_name_table(shapes)
    return torch_name_table(shapes, TORCHVISION_NAMES.__getitem__)


ARCHITECTURE = register(Architecture(
    name="alexnet", what="AlexNet (the reference's Places365 or torchvision's names)",
    build=lambda config: AlexNet(**tuples(config)),
    signatures=(("conv1.weight", "fc6.weight"), ("features.0.weight", "classifier.1.weight")),
    read_config=read_config, table=_table,
    example_input=lambda config: (1, config["image_size"], config["image_size"], 3),
    spec=lambda model, variables, *, name, class_names=None: spec(
        model, variables, name=name, class_names=class_names)))
