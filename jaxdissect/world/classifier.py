"""The world classifier: VGG-16's layer structure and names at reduced width.

``WorldVGG16`` takes ``[b, 64, 64, 3]`` images normalised with
``jaxdissect.models.preprocess``; ``conv5_3`` is ``[b, 4, 4, 128]``. Shipped in
``weights/world/classifier`` and trained by ``scripts/train_world_classifier.py``: the
whole network, then ``conv5_3`` and the fc layers retrained on its frozen ``conv5_2``
features with an L1 penalty on ``conv5_3``'s activations (sparse, less redundant units;
``jaxdissect.world.train.top``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxdissect.models.vgg16 import VGG16, preprocess
from jaxdissect.world.scenes import CLASS_NAMES
from jaxdissect.world.weights import WEIGHTS_DIR, load_params, read_config

#: architecture arguments of the shipped classifier
CLASSIFIER_ARGS = {"widths": (16, 32, 64, 128, 128), "fc_width": 128,
                   "num_classes": len(CLASS_NAMES), "pool_hw": (2, 2)}

WorldVGG16 = functools.partial(VGG16, **CLASSIFIER_ARGS)

DEFAULT_DIR = WEIGHTS_DIR / "classifier"


def model_from_config(config: dict) -> VGG16:
    a = config["arch"]
    return VGG16(widths=tuple(a["widths"]), fc_width=a["fc_width"],
                 num_classes=a["num_classes"], pool_hw=tuple(a["pool_hw"]))


def load_classifier(directory=None):
    """``(model, params)`` of the world classifier in ``directory`` (default: the
    shipped ``weights/world/classifier``). Inputs: ``preprocess(images01)``."""
    directory = DEFAULT_DIR if directory is None else directory
    config = read_config(directory)
    model = model_from_config(config)
    size = config.get("image_size", 64)
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))["params"])
    return model, load_params(directory, abstract)


def spec(directory=None):
    """The world classifier as a :class:`~jaxdissect.spec.ModelSpec`: VGG-16 layer names,
    64x64 whole images (``resize="stretch"``), the world's class names in output order."""
    from jaxdissect.models import vgg16
    model, params = load_classifier(directory)
    size = read_config(DEFAULT_DIR if directory is None else directory).get("image_size", 64)
    return vgg16.spec(model, params, name="world-classifier" if directory is None
                      else str(directory), input_size=(size, size),
                      class_names=CLASS_NAMES, resize="stretch")


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, params, images01):
    return model.apply({"params": params}, preprocess(images01))


def classify(model, params, images01) -> jax.Array:
    """``[b, H, W, 3]`` images in [0, 1] -> ``[b, num_classes]`` logits."""
    return _logits(model, params, jnp.asarray(images01, jnp.float32))
