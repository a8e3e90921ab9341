"""Tiny Flax models under the model call contract, with PyTorch twins as oracles.

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

from jaxdissect.edits import apply_edit, check_edit_names
from jaxdissect.labels import LabelSet


def _run(steps, x, capture, edits, start, stop):
    names = [n for n, _ in steps]
    check_edit_names(edits, tuple(names))
    first = 0 if start is None else names.index(start)
    last = len(names) - 1 if stop is None else names.index(stop)
    acts = {}
    for i in range(first, last + 1):
        name, fn = steps[i]
        if not (start is not None and i == first):
            x = fn(x)
        x = apply_edit(edits, name, x)
        if name in tuple(capture or ()):
            acts[name] = x
    return x, acts


class TinyClassifier(nn.Module):
    units: int = 6
    classes: int = 5
    layer_names = ("conv1", "conv5_3", "pool5", "fc8a")

    @nn.compact
    def __call__(self, x, capture=(), edits=None, start=None, stop=None):
        c1 = nn.Conv(4, (3, 3), padding="SAME", name="c1")
        c2 = nn.Conv(self.units, (3, 3), padding="SAME", name="c2")
        fc = nn.Dense(self.classes, name="fc")
        steps = [
            ("conv1", lambda h: nn.relu(c1(h))),
            ("conv5_3", lambda h: nn.relu(c2(h))),
            ("pool5", lambda h: nn.max_pool(h, (2, 2), (2, 2))),
            # flatten in NCHW order so the torch twin reads the same weights
            ("fc8a", lambda h: fc(jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1))),
        ]
        return _run(steps, x, capture, edits, start, stop)


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


class TinyGenerator(nn.Module):
    units: int = 8
    z_dim: int = 6
    layer_names = ("layer1", "layer2", "output_16x16")

    @nn.compact
    def __call__(self, z, capture=(), edits=None, start=None, stop=None):
        d = nn.Dense(4 * 4 * 8, name="d")
        c = nn.Conv(self.units, (3, 3), padding="SAME", name="c")
        o = nn.Conv(3, (3, 3), padding="SAME", name="o")

        def up(h):
            return jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)

        steps = [
            ("layer1", lambda h: nn.leaky_relu(d(h).reshape(h.shape[0], 8, 4, 4)
                                               .transpose(0, 2, 3, 1), 0.2)),
            ("layer2", lambda h: nn.leaky_relu(c(up(h)), 0.2)),
            ("output_16x16", lambda h: jax.nn.sigmoid(o(up(h)))),
        ]
        return _run(steps, z, capture, edits, start, stop)


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
