"""The world segmenter: a trained ``SegNet`` for object, part and material, and the
world's colour-naming rule for colour, behind the ``Segmenter`` protocol.

Images of another size (for example a 32x32 generator's samples) are resized
bilinearly to the size the network was trained at, as the reference resizes
generated images for its segmenter; the result is at that size.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.labels import LabelSet
from jaxdissect.models.segnet import SegNet
from jaxdissect.world.vocab import COLOR_LUT, LABELS, LAYERS, layer_ids
from jaxdissect.world.weights import WEIGHTS_DIR, load_params, read_config

#: the layers the network predicts (colour is computed from the pixels)
NET_LAYERS = ("object", "part", "material")
SEGMENTER_ARGS = {"widths": (16, 32, 64, 96),
                  "head_sizes": tuple(len(layer_ids(k)) + 1 for k in NET_LAYERS)}

DEFAULT_DIR = WEIGHTS_DIR / "segmenter"


def head_to_label(layer: str) -> np.ndarray:
    """``[classes]`` label id of each class of ``layer``'s head (class 0 = none)."""
    return np.concatenate([[0], layer_ids(layer)]).astype(np.int32)


def label_to_head(layer: str) -> np.ndarray:
    """``[len(LABELS)]`` head class of each label id (0 for labels of other layers)."""
    out = np.zeros(len(LABELS), np.int32)
    ids = layer_ids(layer)
    out[ids] = np.arange(1, ids.size + 1)
    return out


def color_labels(images01: jax.Array) -> jax.Array:
    """``[b, H, W, 3]`` in [0, 1] -> ``[b, H, W]`` int32 colour label ids (the world's
    colour rule on the pixel rounded to 8 bits, exactly as the renderer labels it)."""
    q = jnp.clip(jnp.round(images01 * 255.0), 0, 255).astype(jnp.int32) >> 3
    idx = (q[..., 0] << 10) | (q[..., 1] << 5) | q[..., 2]
    return jnp.asarray(COLOR_LUT, jnp.int32)[idx]


@functools.partial(jax.jit, static_argnums=(0, 3))
def _segment(net, params, images01, size):
    b, h, w, _ = images01.shape
    if (h, w) != (size, size):
        images01 = jax.image.resize(images01, (b, size, size, 3), "linear")
        images01 = jnp.clip(images01, 0.0, 1.0)
    logits = net.apply({"params": params}, images01)
    layers = []
    for k, head in enumerate(net.split_heads(logits)):
        table = jnp.asarray(head_to_label(NET_LAYERS[k]))
        layers.append(table[jnp.argmax(head, axis=-1)])
    layers.append(color_labels(images01))
    return jnp.stack(layers, axis=1)


class WorldSegmenter:
    """``Segmenter``: ``[b, H, W, 3]`` images in [0, 1] -> ``[b, 4, S, S]`` int32
    (object, part, material, colour label ids into ``LABELS``), ``S`` = ``size``."""

    labels: LabelSet = LABELS
    num_layers: int = len(LAYERS)

    def __init__(self, net: SegNet, params, size: int = 64):
        self.net, self.params, self.size = net, params, size

    def __call__(self, images: jax.Array) -> jax.Array:
        images = jnp.asarray(images, jnp.float32)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"WorldSegmenter wants [b, H, W, 3] images, got {images.shape}")
        return _segment(self.net, self.params, images, self.size)


def load_segmenter(directory=None) -> WorldSegmenter:
    """The world segmenter in ``directory`` (default: shipped ``weights/world/segmenter``)."""
    directory = DEFAULT_DIR if directory is None else directory
    config = read_config(directory)
    a = config["arch"]
    if tuple(a["head_sizes"]) != SEGMENTER_ARGS["head_sizes"]:
        raise ValueError(
            f"the world segmenter in {directory} predicts {tuple(a['head_sizes'])} "
            f"object/part/material classes but the world's vocabulary has "
            f"{SEGMENTER_ARGS['head_sizes']}: it was trained for another vocabulary; "
            "retrain it with scripts/train_world_segmenter.py")
    net = SegNet(widths=tuple(a["widths"]), head_sizes=tuple(a["head_sizes"]))
    size = config.get("image_size", 64)
    abstract = jax.eval_shape(
        lambda: net.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))["params"])
    return WorldSegmenter(net, load_params(directory, abstract), size)
