"""Models as a user brings them: plain Flax (linen and NNX), written without any
jaxdissect import, then the few lines of ``ModelSpec`` that make them dissectable
(``--model py:tests.support.user_models:linen_classifier`` and friends).

The classifiers take 32x32 images in [0, 1] and give 11 logits (the world's classes);
``features`` is an 8x8x12 convolution (its output before the ReLU: a tap is a module's
output). The generator maps ``z [b, 8]`` to 16x16 images in [0, 1]; ``block`` is its
8x8x12 layer.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx


class LinenCNN(nn.Module):
    classes: int = 11

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="stem")(x))        # 16x16
        x = nn.relu(nn.Conv(12, (3, 3), strides=2, name="features")(x))   # 8x8
        return nn.Dense(self.classes, name="head")(x.mean(axis=(1, 2)))


class NNXCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, classes: int = 11):
        self.stem = nnx.Conv(3, 8, (3, 3), strides=2, rngs=rngs)
        self.features = nnx.Conv(8, 12, (3, 3), strides=2, rngs=rngs)
        self.head = nnx.Linear(12, classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.stem(x))
        x = nnx.relu(self.features(x))
        return self.head(x.mean(axis=(1, 2)))


class LinenGenerator(nn.Module):
    @nn.compact
    def __call__(self, z):
        h = nn.Dense(4 * 4 * 16, name="fc")(z).reshape(z.shape[0], 4, 4, 16)
        h = jnp.repeat(jnp.repeat(nn.leaky_relu(h, 0.2), 2, 1), 2, 2)
        h = nn.Conv(12, (3, 3), name="block")(h)                          # 8x8
        h = jnp.repeat(jnp.repeat(nn.leaky_relu(h, 0.2), 2, 1), 2, 2)
        return jax.nn.sigmoid(nn.Conv(3, (3, 3), name="out")(h))        # 16x16


def _world_classes():
    from jaxdissect.world.scenes import CLASS_NAMES
    return tuple(CLASS_NAMES)


def linen_params(seed: int = 0):
    return LinenCNN().init(jax.random.key(seed), jnp.zeros((1, 32, 32, 3)))["params"]


def linen_classifier():
    from jaxdissect.spec import ModelSpec
    return ModelSpec.from_linen(LinenCNN(), linen_params(), kind="classifier",
                                name="user-linen", layers={"features": "features"},
                                default_layer="features", input_size=(32, 32),
                                class_names=_world_classes(), resize="stretch")


def nnx_classifier():
    from jaxdissect.spec import ModelSpec
    return ModelSpec.from_nnx(NNXCNN(nnx.Rngs(1)), kind="classifier", name="user-nnx",
                              layers={"features": "features"}, default_layer="features",
                              input_size=(32, 32), class_names=_world_classes(),
                              resize="stretch")


def generator_params(seed: int = 2):
    return LinenGenerator().init(jax.random.key(seed), jnp.zeros((1, 8)))["params"]


def linen_generator():
    from jaxdissect.spec import ModelSpec
    return ModelSpec.from_linen(LinenGenerator(), generator_params(), kind="generator",
                                name="user-generator", layers={"block": "block"},
                                default_layer="block", z_dim=8, to_images=lambda x: x)


def attack_classes(spec, n: int) -> tuple[str, str]:
    """``(source, target)`` for an attack on ``spec`` over the first ``n`` world images
    at 32 pixels (seed 4): the class it gets right most often, and the next class."""
    import numpy as np

    from jaxdissect.world import WorldSource
    b = WorldSource(n, seed=4, size=32).batch(0, n)
    pred = np.asarray(spec.run(spec.params, b["image"])[0]).argmax(1)
    right = pred == b["label"]
    assert right.any(), "the random model classifies no world image correctly"
    names = spec.class_names
    source = names[int(np.bincount(b["label"][right]).argmax())]
    return source, names[(names.index(source) + 1) % len(names)]
