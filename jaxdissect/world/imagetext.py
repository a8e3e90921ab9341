"""The world image-text model: a small image encoder and a text encoder with one
embedding space, trained on world images and captions made from their ground truth.

Shipped in ``weights/world/imagetext`` and trained by
``scripts/train_world_imagetext.py``. It is an ``ImageTextModel``
(``jaxdissect.imagetext``): ``encode_images(params, images01)`` is a JAX function of
``[b, H, W, 3]`` images in [0, 1] (resized to 64 x 64) and ``encode_texts(texts)``
embeds any text, so any word list can be used as concepts.

Text: a text is lower-cased and split into words (runs of letters); each word is
read as the character n-grams (3 to 5 letters) of ``<word>``, each hashed (CRC-32)
into one of ``buckets`` embedding rows, as fastText embeds words it has never seen.
A text's embedding is an MLP of the mean of its n-grams' rows. A word the world
never names still gets an embedding, from the n-grams it shares with other words.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import zlib
from pathlib import Path
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.world.scenes import CLASS_NAMES
from jaxdissect.world.vocab import LABELS
from jaxdissect.world.weights import WEIGHTS_DIR, load_params, read_config

#: architecture arguments of the shipped model
IMAGETEXT_ARGS = {"widths": (24, 48, 96, 128), "embed_dim": 64, "buckets": 4096,
                  "text_width": 128, "max_ngrams": 64}

DEFAULT_DIR = WEIGHTS_DIR / "imagetext"

_WORD = re.compile(r"[a-z]+")

#: the words the world names: its concepts, then its scene classes ("ski resort")
WORLD_WORDS = tuple(LABELS.names[1:]) + tuple(c.replace("_", " ") for c in CLASS_NAMES)

#: the default concept list: ``WORLD_WORDS``, then words the world never names
CONCEPTS_PATH = Path(__file__).with_name("concepts.txt")


def default_concepts() -> list[str]:
    """The shipped concept list (``concepts.txt``)."""
    from jaxdissect.imagetext import parse_concepts
    return parse_concepts(CONCEPTS_PATH.read_text(encoding="utf-8"), str(CONCEPTS_PATH))


def distractors(concepts) -> list[str]:
    """The concepts of a list that the world never names."""
    return [c for c in concepts if c not in WORLD_WORDS]


def ngram_ids(text: str, buckets: int, max_ngrams: int) -> list[int]:
    """The hashed character 3- to 5-grams of each word of ``text`` (at most
    ``max_ngrams``; a text without letters has none)."""
    ids = []
    for word in _WORD.findall(text.lower()):
        w = f"<{word}>"
        for n in (3, 4, 5):
            ids.extend(zlib.crc32(w[i:i + n].encode()) % buckets
                       for i in range(len(w) - n + 1))
    return ids[:max_ngrams]


def tokenize(texts: Sequence[str], buckets: int, max_ngrams: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """``(ids [M, max_ngrams] int32, mask [M, max_ngrams] float32)``; a text with no
    letters raises ValueError (it would have no embedding)."""
    ids = np.zeros((len(texts), max_ngrams), np.int32)
    mask = np.zeros((len(texts), max_ngrams), np.float32)
    for i, t in enumerate(texts):
        grams = ngram_ids(t, buckets, max_ngrams)
        if not grams:
            raise ValueError(f"text {t!r} has no letters to embed")
        ids[i, :len(grams)] = grams
        mask[i, :len(grams)] = 1.0
    return ids, mask


class ImageEncoder(nn.Module):
    """``[b, 64, 64, 3]`` images in [0, 1] -> ``[b, embed_dim]`` (not normalised): a
    5x5 stride-2 stem, then per width a 3x3 conv and a 3x3 stride-2 conv (ReLU), mean
    and max pooled."""

    widths: Sequence[int]
    embed_dim: int

    @nn.compact
    def __call__(self, images01):
        x = (images01 - 0.5) * 2.0
        x = nn.relu(nn.Conv(self.widths[0], (5, 5), strides=(2, 2), name="stem")(x))
        for i, w in enumerate(self.widths[1:]):
            x = nn.relu(nn.Conv(x.shape[-1], (3, 3), name=f"conv{i}")(x))
            x = nn.relu(nn.Conv(w, (3, 3), strides=(2, 2), name=f"down{i}")(x))
        x = jnp.concatenate([x.mean((1, 2)), x.max((1, 2))], -1)
        return nn.Dense(self.embed_dim, name="proj")(x)


class TextEncoder(nn.Module):
    """``(ids, mask) [M, n]`` -> ``[M, embed_dim]`` (not normalised)."""

    buckets: int
    text_width: int
    embed_dim: int

    @nn.compact
    def __call__(self, ids, mask):
        rows = nn.Embed(self.buckets, self.text_width, name="ngrams")(ids)
        x = (rows * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        x = nn.gelu(nn.Dense(self.text_width, name="hidden")(x))
        return nn.Dense(self.embed_dim, name="proj")(x)


class WorldCLIP(nn.Module):
    """Both encoders; ``__call__`` (for ``init``) embeds images and texts."""

    widths: Sequence[int] = IMAGETEXT_ARGS["widths"]
    embed_dim: int = IMAGETEXT_ARGS["embed_dim"]
    buckets: int = IMAGETEXT_ARGS["buckets"]
    text_width: int = IMAGETEXT_ARGS["text_width"]
    max_ngrams: int = IMAGETEXT_ARGS["max_ngrams"]

    def setup(self):
        self.image = ImageEncoder(self.widths, self.embed_dim)
        self.text = TextEncoder(self.buckets, self.text_width, self.embed_dim)

    def __call__(self, images01, ids, mask):
        return self.image(images01), self.text(ids, mask)

    def images(self, images01):
        return self.image(images01)

    def texts(self, ids, mask):
        return self.text(ids, mask)


def _resize64(images01):
    images01 = jnp.asarray(images01, jnp.float32)
    if images01.shape[1:3] != (64, 64):
        images01 = jax.image.resize(images01, images01.shape[:1] + (64, 64, 3), "linear")
    return images01


@dataclasses.dataclass(frozen=True, eq=False)
class WorldImageText:
    """The world image-text model as an ``ImageTextModel`` (``jaxdissect.imagetext``)."""

    module: WorldCLIP
    params: dict
    name: str = "world-imagetext"

    def encode_images(self, params, images01):
        """``[b, H, W, 3]`` in [0, 1] -> ``[b, D]`` (a JAX function; jit-able)."""
        return self.module.apply({"params": params}, _resize64(images01),
                                 method=WorldCLIP.images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``[M, D]`` float32 embeddings of ``texts``."""
        ids, mask = tokenize(list(texts), self.module.buckets, self.module.max_ngrams)
        out = _texts(self.module, self.params, jnp.asarray(ids), jnp.asarray(mask))
        return np.array(out, np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _texts(module, params, ids, mask):
    return module.apply({"params": params}, ids, mask, method=WorldCLIP.texts)


def model_from_config(config: dict) -> WorldCLIP:
    a = config["arch"]
    return WorldCLIP(widths=tuple(a["widths"]), embed_dim=a["embed_dim"],
                     buckets=a["buckets"], text_width=a["text_width"],
                     max_ngrams=a["max_ngrams"])


def init_params(module: WorldCLIP, seed: int = 0):
    ids = jnp.zeros((1, module.max_ngrams), jnp.int32)
    return module.init(jax.random.key(seed), jnp.zeros((1, 64, 64, 3)), ids,
                       jnp.ones((1, module.max_ngrams)))["params"]


def load_imagetext(directory=None) -> WorldImageText:
    """The world image-text model in ``directory`` (default: the shipped
    ``weights/world/imagetext``)."""
    directory = DEFAULT_DIR if directory is None else directory
    module = model_from_config(read_config(directory))
    abstract = jax.eval_shape(lambda: init_params(module))
    return WorldImageText(module, load_params(directory, abstract),
                          "world-imagetext" if directory == DEFAULT_DIR else str(directory))
