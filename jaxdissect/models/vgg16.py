"""VGG-16 in Flax with the reference's research layer names.

Layout of the reference (netdissect ``experiment/oldvgg16.py``, a torchvision
VGG-16 whose layers are renamed): thirteen 3x3 convolutions ``conv1_1`` ...
``conv5_3`` in five stages, each stage ending in a 2x2 max pool ``pool1`` ...
``pool5``; an adaptive average pool to 7x7; ``fc6``, ``fc7`` and the classifier
``fc8a``. Inputs are NHWC images normalised by :func:`preprocess`.

Activation names. In the reference every ReLU is in place, so what a hook on
``conv5_3`` records is the *rectified* output; here ``conv*`` and ``fc6``/``fc7``
name the post-ReLU activations, which is exactly that value. An edit at
``conv5_3`` is applied to that rectified value (for zeroing, or any
non-negative replacement, identical to editing before the ReLU). Dropout is the
identity at evaluation and is not a layer here.

Parameters: conv ``kernel`` HWIO and ``bias``; fc ``weight`` ``[out, in]`` (PyTorch
order, input flattened channel-major) and ``bias`` -- see :class:`LinearOI`.

State dicts (:data:`ARCHITECTURE`, ``vgg16``; widths and class count read from the
shapes): the reference's names (``features.conv1_1.weight`` ...,
``classifier.fc6.weight``, ``classifier.fc7.*``, ``classifier.fc8a.*``), torchvision's
(``features.0.weight`` ... ``features.28.*``, ``classifier.0/3/6.*``) and timm's
(torchvision's features; ``pre_logits.fc1`` and ``fc2``, fc6 and fc7 stored as 7x7 and
1x1 convolutions, and ``head.fc``), from ``.pth`` or ``.safetensors``. timm's head runs
its 7x7 convolution where this model pools adaptively to 7x7 first: the same function at
224x224.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.checkpoints.architectures import Architecture, register, tuples
from jaxdissect.checkpoints.convert import CheckpointMismatch, dim_of, torch_name_table
from jaxdissect.models.layers import ConvReLU, MaxPool

# ImageNet statistics; the reference normalises Places365 images with these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

STAGE_DEPTHS = (2, 2, 3, 3, 3)


def preprocess(images01: jnp.ndarray) -> jnp.ndarray:
    """``[b, H, W, 3]`` RGB in [0, 1] -> ImageNet-normalised input of :class:`VGG16`."""
    shape = (1,) * (images01.ndim - 1) + (3,)
    mean = jnp.asarray(IMAGENET_MEAN, images01.dtype).reshape(shape)
    std = jnp.asarray(IMAGENET_STD, images01.dtype).reshape(shape)
    return (images01 - mean) / std


def vgg_layer_names(stage_depths: Sequence[int] = STAGE_DEPTHS) -> tuple[str, ...]:
    """Ordered research names: ``conv1_1, conv1_2, pool1, ..., pool5, fc6, fc7, fc8a``."""
    names = []
    for s, depth in enumerate(stage_depths, start=1):
        names += [f"conv{s}_{j}" for j in range(1, depth + 1)] + [f"pool{s}"]
    return tuple(names) + ("fc6", "fc7", "fc8a")


def adaptive_avg_pool(x: jnp.ndarray, out_hw: tuple[int, int]) -> jnp.ndarray:
    """PyTorch ``AdaptiveAvgPool2d`` on NHWC ``[b, h, w, c] -> [b, oh, ow, c]``.

    Bin ``i`` of ``n -> m`` averages inputs ``floor(i*n/m) .. ceil((i+1)*n/m) - 1``.
    """
    def matrix(n, m):
        a = np.zeros((m, n), np.float32)
        for i in range(m):
            lo, hi = (i * n) // m, -((-(i + 1) * n) // m)
            a[i, lo:hi] = 1.0 / (hi - lo)
        return jnp.asarray(a, x.dtype)

    h, w = x.shape[1:3]
    if (h, w) == tuple(out_hw):
        return x
    return jnp.einsum("ph,qw,bhwc->bpqc", matrix(h, out_hw[0]), matrix(w, out_hw[1]), x)


class LinearOI(nn.Module):
    """Fully connected layer whose ``weight`` is stored ``[out, in]`` as PyTorch
    stores it, so converting the 400 MB ``fc6`` of VGG-16 needs no transpose (the
    matrix product contracts the right axis instead). ``[b, in] -> [b, out]``."""

    features: int
    relu: bool = False

    @nn.compact
    def __call__(self, x):
        w = self.param("weight", nn.initializers.lecun_normal(in_axis=1, out_axis=0),
                       (self.features, x.shape[-1]))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        y = jax.lax.dot_general(x, w.astype(x.dtype), (((x.ndim - 1,), (1,)), ((), ())))
        y = y + b.reshape((1,) * (y.ndim - 1) + (-1,))
        return nn.relu(y) if self.relu else y


class VGG16(nn.Module):
    """VGG-16: ``model.apply({"params": p}, x) -> logits [b, num_classes]``.

    ``x``: ``[b, H, W, 3]`` normalised images. Every research-named layer is a
    submodule whose output is that activation (``conv*``, ``fc6``, ``fc7`` post-ReLU;
    ``pool*``; ``fc8a`` the logits), so :mod:`jaxdissect.taps` captures and edits it
    by name: ``[b, h, w, units]`` for conv and pool layers, ``[b, units]`` for fc.
    """

    widths: Sequence[int] = (64, 128, 256, 512, 512)
    fc_width: int = 4096
    num_classes: int = 365
    pool_hw: tuple[int, int] = (7, 7)
    stage_depths: Sequence[int] = STAGE_DEPTHS

    @property
    def layer_names(self) -> tuple[str, ...]:
        return vgg_layer_names(self.stage_depths)

    def layer_geometry(self, layer: str) -> list[tuple[int, int, int]]:
        """``(kernel, stride, padding)`` of every conv and pool from the input up to
        and including ``layer`` (a conv or pool layer), for receptive-field-aware
        upsampling."""
        names = self.layer_names
        if layer not in names:
            raise KeyError(f"{layer!r} is not a layer; known layers: {list(names)}")
        if layer.startswith("fc"):
            raise ValueError(f"{layer!r} is fully connected and has no spatial geometry")
        geometry = []
        for name in names[: names.index(layer) + 1]:
            geometry.append((3, 1, 1) if name.startswith("conv") else (2, 2, 0))
        return geometry

    @nn.compact
    def __call__(self, x: jnp.ndarray):
        if len(self.widths) != len(self.stage_depths):
            raise ValueError(f"widths {tuple(self.widths)} needs one entry per stage "
                             f"{tuple(self.stage_depths)}")
        for s, (depth, width) in enumerate(zip(self.stage_depths, self.widths), start=1):
            for j in range(1, depth + 1):
                x = ConvReLU(width, (3, 3), padding=((1, 1), (1, 1)), name=f"conv{s}_{j}")(x)
            x = MaxPool(2, 2, name=f"pool{s}")(x)
        x = adaptive_avg_pool(x, self.pool_hw)
        # Flattened in channel-major (NCHW) order, as the reference's fc6 weight
        # expects; transposing this small map is cheaper than permuting the weight.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        x = LinearOI(self.fc_width, relu=True, name="fc6")(x)
        x = LinearOI(self.fc_width, relu=True, name="fc7")(x)
        return LinearOI(self.num_classes, name="fc8a")(x)


def spec(model: VGG16, params, *, name: str = "vgg16", input_size=(224, 224),
         class_names=None, resize: str = "resize-crop", upsample: str = "plain"):
    """A :class:`~jaxdissect.spec.ModelSpec` for a VGG-16: every research name a
    layer, ImageNet normalisation, receptive-field geometry for conv and pool layers
    (the reference stretches VGG-16 maps plainly: ``upsample="plain"``)."""
    from jaxdissect.spec import ModelSpec
    names = model.layer_names
    return ModelSpec.from_linen(
        model, params, kind="classifier", name=name, layers={n: n for n in names},
        default_layer=f"conv{len(model.stage_depths)}_{model.stage_depths[-1]}",
        input_size=tuple(input_size), preprocess=preprocess, resize=resize,
        class_names=None if class_names is None else tuple(class_names),
        geometry={n: tuple(model.layer_geometry(n)) for n in names if not n.startswith("fc")},
        upsample=upsample, single_unit_tail=single_unit_tail)


def single_unit_tail(spec, layer: str):
    """For a spec of a ``VGG16`` cut at the conv layer just before ``pool5``: the logits
    with each single unit zeroed, ``(variables, acts [b,h,w,u]) -> [u, b, classes]``;
    None at other layers.

    Zeroing channel c of the input of ``pool5`` zeroes channel c of ``pool5`` (a max
    over zeros) and of the average pool after it, leaving the other channels as they
    were. ``fc6`` is linear before its ReLU, so its pre-activation with c removed is
    the unedited one minus c's own contribution ``W6[:, c, :] @ pool_c``; all units'
    contributions together cost one ``fc6`` pass per image instead of one per
    (unit, image). ``fc7`` and ``fc8a`` then run as usual (``spec.resume`` from
    ``fc6``). The same numbers as the edited tail, up to float rounding.
    """
    model = spec.module
    names = model.layer_names
    if "pool5" not in names or layer not in names or \
            names.index("pool5") != names.index(layer) + 1:
        return None

    def single_unit(variables, acts):
        params = variables["params"]
        pooled = MaxPool(2, 2).apply({}, acts)                   # VGG16's pool5
        q = adaptive_avg_pool(pooled, model.pool_hw)            # [b, P1, P2, u]
        b, p1, p2, u = q.shape
        qf = jnp.transpose(q, (0, 3, 1, 2)).reshape(b, u, p1 * p2)
        w = params["fc6"]["weight"].reshape(-1, u, p1 * p2)    # [out, u, P]
        own = jnp.einsum("bup,oup->ubo", qf, w)                 # [u, b, out]
        pre = own.sum(0) + params["fc6"]["bias"].reshape(1, -1)
        fc6 = jax.nn.relu(pre[None] - own)                      # [u, b, out]
        logits = spec.resume(variables, "fc6", fc6.reshape(u * b, -1))
        return logits.reshape(u, b, -1)

    return single_unit


VGG16Places365 = functools.partial(VGG16, num_classes=365)
VGG16ImageNet = functools.partial(VGG16, num_classes=1000)


# ---------------------------------------------------------------- state dicts

def _torchvision_names(stage_depths=STAGE_DEPTHS) -> dict[str, str]:
    """torchvision's module names -> the reference's (``features.0`` -> ``features.conv1_1``,
    ``classifier.0/3/6`` -> ``classifier.fc6/fc7/fc8a``)."""
    names, i = {}, 0
    for s, depth in enumerate(stage_depths, start=1):
        for j in range(1, depth + 1):
            names[f"features.{i}"] = f"features.conv{s}_{j}"
            i += 2  # conv, ReLU
        i += 1      # max pool
    return {**names, "classifier.0": "classifier.fc6", "classifier.3": "classifier.fc7",
            "classifier.6": "classifier.fc8a"}


def normalise_state_dict(state_dict) -> dict:
    """torchvision and timm names -> the reference's (see the module docstring); timm's
    convolutional fc6/fc7 weights ``[out, in, kh, kw]`` flattened to ``[out, in*kh*kw]``,
    channel-major as :class:`VGG16` flattens (a view, no copy)."""
    if "features.conv1_1.weight" in state_dict:
        return dict(state_dict)
    timm = {"pre_logits.fc1": "classifier.0", "pre_logits.fc2": "classifier.3",
            "head.fc": "classifier.6"}
    tv = _torchvision_names()
    out = {}
    for key, v in state_dict.items():
        module, _, leaf = key.rpartition(".")
        if module in timm:
            module = timm[module]
            if leaf == "weight" and np.ndim(v) == 4:
                v = np.reshape(v, (v.shape[0], -1))
        out[f"{tv.get(module, module)}.{leaf}" if module else key] = v
    return out


def read_config(state_dict) -> dict:
    """VGG16 constructor arguments read from a state dict in the reference's names."""
    widths = []
    for s, depth in enumerate(STAGE_DEPTHS, start=1):
        key = f"features.conv{s}_{depth}.weight"
        if key not in state_dict:
            raise CheckpointMismatch(
                f"not a VGG-16 checkpoint: no key {key!r} (found keys like "
                f"{sorted(state_dict)[:4]})")
        widths.append(dim_of(state_dict, key, 0, 4))
    for key in ("classifier.fc7.weight", "classifier.fc8a.weight"):
        if key not in state_dict:
            raise CheckpointMismatch(f"not a VGG-16 checkpoint: no key {key!r}")
    return dict(widths=tuple(widths),
                fc_width=dim_of(state_dict, "classifier.fc7.weight", 0, 2),
                num_classes=dim_of(state_dict, "classifier.fc8a.weight", 0, 2))


def _table(state_dict, config, shapes):
    return torch_name_table(shapes, lambda m: f"features.{m}" if m.startswith("conv")
                            else f"classifier.{m}")


ARCHITECTURE = register(Architecture(
    name="vgg16", what="VGG-16 (the reference's, torchvision's or timm's names)",
    build=lambda config: VGG16(**tuples(config)),
    signatures=(("features.conv1_1.weight",),
                ("features.0.weight", "features.28.weight", "classifier.6.weight"),
                ("features.0.weight", "pre_logits.fc1.weight", "head.fc.weight")),
    normalise=normalise_state_dict, read_config=read_config, table=_table,
    example_input=lambda config: (1, 32, 32, 3),
    spec=lambda model, variables, *, name, class_names=None: spec(
        model, variables, name=name, class_names=class_names),
    tree="params"))
