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
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
        upsample=upsample)


VGG16Places365 = functools.partial(VGG16, num_classes=365)
VGG16ImageNet = functools.partial(VGG16, num_classes=1000)
