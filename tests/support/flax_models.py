"""Flax models as people write them (no jaxdissect import in the models): a linen
classifier whose ``__call__(x, train: bool)`` has no default and returns a dict, one
that returns a tuple, an NNX classifier with BatchNorm and a Dropout holding its RNG
stream (never put in eval mode by its author), and a linen generator returning a dict.
Each has a fully connected layer ``fc1`` (16 units) after an 8x8x12 convolution
``features``; classifiers take 32x32 images and give the world's 11 classes.

The factories below are the few lines of ``ModelSpec`` a user adds.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class TrainFlagCNN(nn.Module):
    """``train`` without a default; BatchNorm and Dropout follow it."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="stem")(x))             # 16x16
        f = nn.Conv(12, (3, 3), strides=2, name="features")(x)                # 8x8
        h = nn.BatchNorm(use_running_average=not train, name="bn")(f)
        h = nn.Dropout(0.5, deterministic=not train)(nn.relu(h))
        fc1 = nn.Dense(16, name="fc1")(h.mean(axis=(1, 2)))
        logits = nn.Dense(11, name="head")(nn.relu(fc1))
        return {"logits": logits, "embedding": fc1}


class TupleCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        f = nn.Conv(12, (3, 3), strides=4, name="features")(x)                 # 8x8
        fc1 = nn.Dense(16, name="fc1")(nn.relu(f).mean(axis=(1, 2)))
        return fc1, nn.Dense(11, name="head")(nn.relu(fc1))


class NNXNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.features = nnx.Conv(3, 12, (3, 3), strides=4, rngs=rngs)            # 8x8
        self.bn = nnx.BatchNorm(12, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.fc1 = nnx.Linear(12, 16, rngs=rngs)
        self.head = nnx.Linear(16, 11, rngs=rngs)

    def __call__(self, x):
        h = self.drop(nnx.relu(self.bn(self.features(x))))
        fc1 = self.fc1(h.mean(axis=(1, 2)))
        return self.head(nnx.relu(fc1)), fc1


class DictGenerator(nn.Module):
    @nn.compact
    def __call__(self, z, train: bool):
        h = nn.Dense(4 * 4 * 16, name="fc")(z).reshape(z.shape[0], 4, 4, 16)
        h = jnp.repeat(jnp.repeat(nn.leaky_relu(h, 0.2), 2, 1), 2, 2)
        h = nn.Conv(12, (3, 3), name="block")(h)                              # 8x8
        h = jnp.repeat(jnp.repeat(nn.leaky_relu(h, 0.2), 2, 1), 2, 2)
        return {"image": jax.nn.sigmoid(nn.Conv(3, (3, 3), name="out")(h)), "z": z}


def _classes():
    from jaxdissect.world.scenes import CLASS_NAMES
    return tuple(CLASS_NAMES)


def train_flag_variables(seed: int = 0):
    """Random weights and random BatchNorm running statistics (so eval mode differs
    from batch statistics)."""
    v = TrainFlagCNN().init(jax.random.key(seed), jnp.zeros((1, 32, 32, 3)), train=False)
    rng = np.random.default_rng(seed)
    stats = {"mean": jnp.asarray(rng.normal(0, 0.3, 12), jnp.float32),
             "var": jnp.asarray(rng.uniform(0.5, 2.0, 12), jnp.float32)}
    return {"params": v["params"], "batch_stats": {"bn": stats}}


def nnx_model(seed: int = 1) -> NNXNet:
    model = NNXNet(nnx.Rngs(params=seed, dropout=seed + 1))
    rng = np.random.default_rng(seed)
    model.bn.mean[...] = jnp.asarray(rng.normal(0, 0.3, 12), jnp.float32)
    model.bn.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, 12), jnp.float32)
    return model                                   # left in training mode, as written


def _fields(name):
    return dict(kind="classifier", name=name, layers={"features": "features", "fc1": "fc1"},
                default_layer="features", input_size=(32, 32), class_names=_classes(),
                resize="stretch")


def train_flag_classifier():
    from jaxdissect.spec import ModelSpec
    return ModelSpec.from_linen(TrainFlagCNN(), train_flag_variables(),
                                apply_kwargs={"train": False}, output="logits",
                                **_fields("train-flag"))


def tuple_classifier():
    from jaxdissect.spec import ModelSpec
    v = TupleCNN().init(jax.random.key(3), jnp.zeros((1, 32, 32, 3)))
    return ModelSpec.from_linen(TupleCNN(), v, output=1, **_fields("tuple"))


def nnx_classifier():
    from jaxdissect.spec import ModelSpec
    return ModelSpec.from_nnx(nnx_model(), output=lambda out: out[0], **_fields("nnx-bn"))


def dict_generator():
    from jaxdissect.spec import ModelSpec
    v = DictGenerator().init(jax.random.key(2), jnp.zeros((1, 8)), train=False)
    return ModelSpec.from_linen(DictGenerator(), v, apply_kwargs={"train": False},
                                output="image", kind="generator", name="dict-gen",
                                layers={"block": "block"}, default_layer="block", z_dim=8,
                                to_images=lambda x: x)
