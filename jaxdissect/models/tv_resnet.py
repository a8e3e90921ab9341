"""ResNet-18/34/50/101/152 in the torchvision layout (NHWC, BatchNorm in evaluation mode).

Layout (torchvision ``models/resnet.py``, v1.5: a bottleneck's stride is on its 3x3
convolution): ``conv1`` 7x7/2 -> ``bn1`` -> ``relu`` -> ``maxpool`` 3x3/2 ->
``layer1`` .. ``layer4`` (stages of ``BasicBlock`` or ``Bottleneck``; stages 2-4 halve
the resolution) -> ``avgpool`` -> ``fc``. The reference's ResNet-152 Places365 file
(netdissect ``experiment/oldresnet152.py``, a Torch7 conversion) is this network with
its layers numbered instead of named (:func:`oldresnet_module`). Its ``AvgPool2d(7)``
equals the global mean at the 224x224 input it is made for.

Parameter tree mirrors the state dict: ``layer1/0/conv1/kernel`` is
``layer1.0.conv1.weight``; ``layer2/0/downsample/0`` and ``.../1`` the skip's conv and
BatchNorm. BatchNorm ``scale``/``bias`` are ``params``, ``mean``/``var`` are
``batch_stats`` (apply with ``{"params": ..., "batch_stats": ...}``); statistics are
never updated.

Research layers are module paths (taps see module outputs), named as torchvision names
the modules, so a forward hook there records the same value:

* ``conv1``   ``[b, 112, 112, 64]`` the stem convolution, before BatchNorm;
* ``relu``    ``[b, 112, 112, 64]`` the stem after BatchNorm and ReLU;
* ``maxpool`` ``[b, 56, 56, 64]``;
* ``layer1`` .. ``layer4`` the stage outputs (after each last block's ReLU),
  ``[b, 56, 56, 64 * e]`` .. ``[b, 7, 7, 512 * e]`` with ``e`` 1 (basic) or 4
  (bottleneck);
* ``avgpool`` ``[b, 1, 1, 512 * e]``; ``fc`` ``[b, num_classes]`` logits.

Sizes are for a 224x224 input. Every block is a module too (``layer4/2``), as is each
block's convolution (``layer4/2/conv3``), for finer taps.

State dicts (:data:`ARCHITECTURE`, ``resnet``; block type, depths and class count read
from the shapes): torchvision's names, which timm's ResNets share, and the reference's
numbered ResNet-152, from ``.pth`` or ``.safetensors``; the Places365 ``.pth.tar`` files'
``module.`` prefixes and BatchNorm batch counters are undone by
:func:`jaxdissect.checkpoints.convert.prepare`.
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

import flax.linen as nn

from jaxdissect.checkpoints.architectures import Architecture, register, tuples
from jaxdissect.checkpoints.convert import CheckpointMismatch, dim_of, torch_name_table
from jaxdissect.models.layers import GlobalAvgPool, MaxPool, ReLU
from jaxdissect.models.resnet import conv
from jaxdissect.models.vgg16 import LinearOI

BN_EPS = 1e-5
STAGES = ("layer1", "layer2", "layer3", "layer4")
STAGE_PLANES = (64, 128, 256, 512)
EXPANSION = {"basic": 1, "bottleneck": 4}


def batch_norm(name: str) -> nn.BatchNorm:
    """PyTorch ``BatchNorm2d`` in evaluation mode."""
    return nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name=name)


class Downsample(nn.Module):
    """The skip path of a block that changes shape: ``0`` 1x1 conv (stride), ``1`` BN."""

    features: int
    stride: int

    @nn.compact
    def __call__(self, x):
        return batch_norm("1")(conv(self.features, 1, self.stride, name="0")(x))


class BasicBlock(nn.Module):
    """3x3 (stride) -> BN -> ReLU -> 3x3 -> BN, plus the skip, ReLU."""

    planes: int
    stride: int = 1
    downsample: bool = False

    @nn.compact
    def __call__(self, x):
        out = nn.relu(batch_norm("bn1")(conv(self.planes, 3, self.stride, name="conv1")(x)))
        out = batch_norm("bn2")(conv(self.planes, 3, name="conv2")(out))
        if self.downsample:
            x = Downsample(self.planes, self.stride, name="downsample")(x)
        return nn.relu(out + x)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (x4), each with BN (ReLU after the first two), plus
    the skip, ReLU."""

    planes: int
    stride: int = 1
    downsample: bool = False

    @nn.compact
    def __call__(self, x):
        out = nn.relu(batch_norm("bn1")(conv(self.planes, 1, name="conv1")(x)))
        out = nn.relu(batch_norm("bn2")(conv(self.planes, 3, self.stride, name="conv2")(out)))
        out = batch_norm("bn3")(conv(self.planes * 4, 1, name="conv3")(out))
        if self.downsample:
            x = Downsample(self.planes * 4, self.stride, name="downsample")(x)
        return nn.relu(out + x)


class Stage(nn.Module):
    """``depth`` blocks named ``0``, ``1``, ...; the first has the stride and, when the
    shape changes, the ``downsample`` skip."""

    block: str
    planes: int
    depth: int
    stride: int
    in_features: int

    @nn.compact
    def __call__(self, x):
        cls = BasicBlock if self.block == "basic" else Bottleneck
        out_features = self.planes * EXPANSION[self.block]
        for j in range(self.depth):
            first = j == 0
            x = cls(self.planes, self.stride if first else 1,
                    downsample=first and (self.stride != 1 or self.in_features != out_features),
                    name=str(j))(x)
        return x


class ResNet(nn.Module):
    """``model.apply(variables, x)``: ``x [b, H, W, 3]`` ImageNet-normalised images ->
    logits ``[b, num_classes]``."""

    block: str = "basic"
    depths: Sequence[int] = (2, 2, 2, 2)
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x):
        if self.block not in EXPANSION:
            raise ValueError(f"block must be one of {sorted(EXPANSION)}, not {self.block!r}")
        if len(self.depths) != 4:
            raise ValueError(f"depths needs one entry per stage, got {tuple(self.depths)}")
        x = conv(64, 7, 2, name="conv1")(x)
        x = ReLU(name="relu")(batch_norm("bn1")(x))
        x = MaxPool(3, 2, 1, name="maxpool")(x)
        in_features = 64
        for s, (name, planes, depth) in enumerate(zip(STAGES, STAGE_PLANES, self.depths)):
            x = Stage(self.block, planes, depth, 1 if s == 0 else 2, in_features, name=name)(x)
            in_features = planes * EXPANSION[self.block]
        x = GlobalAvgPool(name="avgpool")(x)
        return LinearOI(self.num_classes, name="fc")(x.reshape(x.shape[0], -1))


ResNet18 = functools.partial(ResNet, block="basic", depths=(2, 2, 2, 2))
ResNet34 = functools.partial(ResNet, block="basic", depths=(3, 4, 6, 3))
ResNet50 = functools.partial(ResNet, block="bottleneck", depths=(3, 4, 6, 3))
ResNet101 = functools.partial(ResNet, block="bottleneck", depths=(3, 4, 23, 3))
ResNet152 = functools.partial(ResNet, block="bottleneck", depths=(3, 8, 36, 3))

#: Research layer names, input first (each is also the module's path).
LAYER_NAMES = ("conv1", "relu", "maxpool") + STAGES + ("avgpool", "fc")


def layer_geometry(model: ResNet, layer: str) -> list[tuple[int, int, int]]:
    """``(kernel, stride, padding)`` of each convolution and pool on the main path from
    the input up to ``layer``, for receptive-field-aligned upsampling (the skip paths
    align their centres the same way). ``avgpool`` and ``fc`` add the 7x7 average pool
    of a 224x224 input (the reference ResNet-152's ``AvgPool2d(7)``): one position,
    which upsampling spreads over the whole image."""
    if layer not in LAYER_NAMES:
        raise KeyError(f"{layer!r} is not a layer; known layers: {list(LAYER_NAMES)}")
    if layer in ("avgpool", "fc"):
        return layer_geometry(model, "layer4") + [(7, 1, 0)]
    geometry = [(7, 2, 3)]
    if layer in ("conv1", "relu"):
        return geometry
    geometry.append((3, 2, 1))
    if layer == "maxpool":
        return geometry
    for s, depth in enumerate(model.depths[: STAGES.index(layer) + 1]):
        for j in range(depth):
            stride = 2 if s > 0 and j == 0 else 1
            geometry += ([(1, 1, 0), (3, stride, 1), (1, 1, 0)] if model.block == "bottleneck"
                         else [(3, stride, 1), (3, 1, 1)])
    return geometry


def spec(model: ResNet, variables, *, name: str = "resnet", class_names=None,
         input_size=(224, 224), resize: str = "resize-crop", upsample: str = "plain"):
    """A :class:`~jaxdissect.spec.ModelSpec` for a ResNet: the research layers of this
    module's docstring, ``layer4`` by default, ImageNet normalisation (the reference
    normalises Places365 images so too), receptive-field geometry for every layer.
    ``avgpool`` and ``fc`` are one value per image (a 1x1 map): dissecting them asks
    which images, as wholes, a unit fires on. The reference upsamples ResNet-152's
    ``layer4`` plainly (``upsample="plain"``)."""
    from jaxdissect.models.vgg16 import preprocess
    from jaxdissect.spec import ModelSpec
    return ModelSpec.from_linen(
        model, variables, kind="classifier", name=name, layers={n: n for n in LAYER_NAMES},
        default_layer="layer4", input_size=tuple(input_size), preprocess=preprocess,
        resize=resize, class_names=None if class_names is None else tuple(class_names),
        geometry={n: tuple(layer_geometry(model, n)) for n in LAYER_NAMES}, upsample=upsample)


# ---------------------------------------------------------------- state dicts

def oldresnet_module(module: str) -> str:
    """Module path of the torchvision-layout ResNet -> the reference ResNet-152's
    numbered ``Sequential`` path (``layer2.0.downsample.1`` -> ``5.0.0.1.1``)."""
    if module in ("conv1", "bn1"):
        return {"conv1": "0", "bn1": "1"}[module]
    if module == "fc":
        return "10.1"
    m = re.fullmatch(r"layer([1-4])\.(\d+)\.(\w+?)(?:\.([01]))?", module)
    if m is None:
        raise ValueError(f"no reference ResNet-152 name for module {module!r}")
    stage, block, part, sub = m.groups()
    head = f"{int(stage) + 3}.{block}.0"
    if part == "downsample":
        return f"{head}.1.{sub}"
    main = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}
    if part not in main:
        raise ValueError(f"no reference ResNet-152 name for module {module!r}")
    return f"{head}.0.{main[part]}"


def layout(state_dict) -> str:
    """``"torchvision"`` or ``"oldresnet"`` (the reference's numbered ResNet-152)."""
    if "conv1.weight" in state_dict:
        return "torchvision"
    if "0.weight" in state_dict and "10.1.weight" in state_dict:
        return "oldresnet"
    raise CheckpointMismatch(
        "not a ResNet checkpoint in the torchvision layout (no key 'conv1.weight') nor "
        f"the reference's ResNet-152 layout (no key '0.weight'); found keys like "
        f"{sorted(state_dict)[:4]}")


def read_config(state_dict) -> dict:
    """``ResNet`` constructor arguments (block, depths, num_classes) read from a
    state dict of either layout."""
    if layout(state_dict) == "torchvision":
        def key(s, j, part):
            return f"layer{s}.{j}.{part}.weight"
        fc = "fc.weight"
    else:
        def key(s, j, part):
            return f"{oldresnet_module(f'layer{s}.{j}.{part}')}.weight"
        fc = "10.1.weight"
    depths = []
    for s in range(1, 5):
        j = 0
        while key(s, j, "conv1") in state_dict:
            j += 1
        if j == 0:
            raise CheckpointMismatch(f"not a ResNet checkpoint: no key {key(s, 0, 'conv1')!r}")
        depths.append(j)
    if fc not in state_dict:
        raise CheckpointMismatch(f"not a ResNet classifier checkpoint: no key {fc!r}")
    block = "bottleneck" if key(1, 0, "conv3") in state_dict else "basic"
    return dict(block=block, depths=tuple(depths), num_classes=dim_of(state_dict, fc, 0, 2))


def _table(state_dict, config, shapes):
    return torch_name_table(shapes, oldresnet_module if layout(state_dict) == "oldresnet"
                            else (lambda m: m))


ARCHITECTURE = register(Architecture(
    name="resnet",
    what="ResNet-18 ... 152 (torchvision's and timm's names, the reference's ResNet-152)",
    build=lambda config: ResNet(**tuples(config)),
    signatures=(("conv1.weight", "layer1.0.conv1.weight", "fc.weight"),
                ("0.weight", "10.1.weight")),
    read_config=read_config, table=_table,
    example_input=lambda config: (1, 32, 32, 3),
    spec=lambda model, variables, *, name, class_names=None: spec(
        model, variables, name=name, class_names=class_names)))
