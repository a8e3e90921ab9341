"""Tiny plain Flax models and their specs, with PyTorch twins as oracles.

``TinyClassifier``: image [b,8,8,3] -> conv1 -> conv5_3 -> pool5 -> fc8a logits.
``TinyGenerator``: z [b,zd] -> layer1 [4x4] -> layer2 [8x8] -> output_16x16 image.
``tiny_segment``: a fixed colour rule giving K=2 label layers, written twice (JAX, torch).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch

from jaxdissect.labels import LabelSet
from jaxdissect.spec import ModelSpec

# The tiny models are plain Flax, written as a user would: no jaxdissect import. Each
# research-named activation is a module's output (a Conv subclass applying its
# nonlinearity), so the tap mechanism reaches it by the module's name.


class ReluConv(nn.Conv):
    def __call__(self, x):
        return nn.relu(super().__call__(x))


class Pool(nn.Module):
    def __call__(self, x):
        return nn.max_pool(x, (2, 2), (2, 2))


class TinyClassifier(nn.Module):
    units: int = 6
    classes: int = 5

    @nn.compact
    def __call__(self, x):
        h = ReluConv(4, (3, 3), padding="SAME", name="c1")(x)
        h = ReluConv(self.units, (3, 3), padding="SAME", name="c2")(h)
        h = Pool(name="pool")(h)
        # flatten in NCHW order so the torch twin reads the same weights
        return nn.Dense(self.classes, name="fc")(jnp.transpose(h, (0, 3, 1, 2))
                                                 .reshape(h.shape[0], -1))


#: research names of the tiny classifier -> module paths
CLASSIFIER_LAYERS = {"conv1": "c1", "conv5_3": "c2", "pool5": "pool", "fc8a": "fc"}


def classifier_spec(params, model=None, **fields) -> ModelSpec:
    """The tiny classifier (8x8 images) as a spec; ``params`` a bare params tree."""
    return ModelSpec.from_linen(model or TinyClassifier(), params, kind="classifier",
                                name="tiny", layers=CLASSIFIER_LAYERS,
                                default_layer="conv5_3", input_size=(8, 8), **fields)


def torch_classifier(params, ablate=None):
    """A torch function image[b,8,8,3] (numpy) -> logits, with ``ablate`` conv5_3
    channels zeroed, from the Flax ``params``."""
    t = lambda a: torch.tensor(np.asarray(a))

    def conv(x, p):
        return torch.nn.functional.conv2d(x, t(p["kernel"]).permute(3, 2, 0, 1), t(p["bias"]),
                                          padding=1)

    def f(images):
        x = t(images).permute(0, 3, 1, 2)
        x = torch.relu(conv(x, params["c1"]))
        x = torch.relu(conv(x, params["c2"]))
        if ablate is not None:
            x = x.clone()
            x[:, list(ablate)] = 0
        x = torch.nn.functional.max_pool2d(x, 2)
        return x.flatten(1) @ t(params["fc"]["kernel"]) + t(params["fc"]["bias"])

    return f


def _up(h):
    return jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)


class Stem(nn.Dense):
    """z -> a 4x4x8 map (LeakyReLU)."""

    def __call__(self, z):
        h = super().__call__(z)
        return nn.leaky_relu(h.reshape(h.shape[0], 8, 4, 4).transpose(0, 2, 3, 1), 0.2)


class UpLeakyConv(nn.Conv):
    def __call__(self, x):
        return nn.leaky_relu(super().__call__(_up(x)), 0.2)


class UpSigmoidConv(nn.Conv):
    def __call__(self, x):
        return jax.nn.sigmoid(super().__call__(_up(x)))


class TinyGenerator(nn.Module):
    units: int = 8
    z_dim: int = 6

    @nn.compact
    def __call__(self, z):
        h = Stem(4 * 4 * 8, name="d")(z)
        h = UpLeakyConv(self.units, (3, 3), padding="SAME", name="c")(h)
        return UpSigmoidConv(3, (3, 3), padding="SAME", name="o")(h)


GENERATOR_LAYERS = {"layer1": "d", "layer2": "c", "output_16x16": "o"}


def generator_spec(params, model=None, **fields) -> ModelSpec:
    """The tiny generator as a spec (its output is already an image in [0, 1])."""
    model = model or TinyGenerator()
    return ModelSpec.from_linen(model, params, kind="generator", name="tiny-generator",
                                layers=GENERATOR_LAYERS, default_layer="layer2",
                                z_dim=model.z_dim, to_images=lambda x: x, **fields)


def torch_generator(params):
    """torch ``g(z, edit_fn=None)``: ``edit_fn(layer2 NCHW tensor) -> tensor``."""
    t = lambda a: torch.tensor(np.asarray(a))

    def conv(x, p):
        return torch.nn.functional.conv2d(x, t(p["kernel"]).permute(3, 2, 0, 1), t(p["bias"]),
                                          padding=1)

    def g(z, edit_fn=None):
        h = t(z) @ t(params["d"]["kernel"]) + t(params["d"]["bias"])
        h = torch.nn.functional.leaky_relu(h.reshape(-1, 8, 4, 4), 0.2)
        h = torch.nn.functional.leaky_relu(conv(h.repeat_interleave(2, 2).repeat_interleave(
            2, 3), params["c"]), 0.2)
        if edit_fn is not None:
            h = edit_fn(h)
        img = torch.sigmoid(conv(h.repeat_interleave(2, 2).repeat_interleave(2, 3), params["o"]))
        return img.permute(0, 2, 3, 1)

    return g


SEG_LABELS = LabelSet.from_pairs([("red", "color"), ("green", "color"), ("blue", "color"),
                                  ("bright", "material"), ("dark", "material")])


class TinySegmenter:
    """Layer 0: dominant channel (1..3) where it exceeds 0.5; layer 1: bright (4) where
    the mean exceeds 0.55, dark (5) below 0.45."""

    labels = SEG_LABELS
    num_layers = 2

    def __call__(self, images):
        images = jnp.asarray(images)
        m = images.max(-1)
        l0 = jnp.where(m > 0.5, jnp.argmax(images, -1) + 1, 0)
        mean = images.mean(-1)
        l1 = jnp.where(mean > 0.55, 4, jnp.where(mean < 0.45, 5, 0))
        return jnp.stack([l0, l1], axis=1).astype(jnp.int32)


def torch_segment(images):
    m, arg = images.max(-1)
    l0 = torch.where(m > 0.5, arg + 1, torch.zeros_like(arg))
    mean = images.mean(-1)
    l1 = torch.where(mean > 0.55, torch.full_like(arg, 4),
                     torch.where(mean < 0.45, torch.full_like(arg, 5), torch.zeros_like(arg)))
    return torch.stack([l0, l1], 1)


class ArraySource:
    """An in-memory ``ImageSource`` for tests."""

    seg_labels = None

    def __init__(self, **arrays):
        self.arrays = arrays
        self.num_examples = len(next(iter(arrays.values())))
        self.class_names = None

    def batch(self, start, stop):
        return {k: v[start:stop] for k, v in self.arrays.items()}

    def identity(self):
        from jaxdissect.runtime.fingerprint import fingerprint
        return {"source": "arrays", "content": fingerprint(self.arrays)}
