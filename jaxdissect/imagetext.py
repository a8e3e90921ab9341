"""Image-text models: the protocol open-vocabulary dissection reads them through.

An image-text model is any object with

    params                          a pytree (the image encoder's weights), passed to
                                    ``encode_images`` as an argument of the compiled
                                    step, never folded into it as a constant
    encode_images(params, images01) [b, H, W, 3] images in [0, 1] -> [b, D]; a JAX
                                    function (traced inside the sweep's step)
    encode_texts(texts)             a list of M strings -> [M, D] NumPy array

whose image and text embeddings share one space (cosine similarity compares them).
``load_imagetext("world")`` is the shipped world model (``world.imagetext``);
``"hf:NAME"`` a Hugging Face ``transformers`` CLIP by hub name or folder
(``imagetext_hf``); ``"py:MODULE:FACTORY"`` is your own (``FACTORY()`` returns such
an object, or the attribute is one).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from jaxdissect.errors import UserError


@runtime_checkable
class ImageTextModel(Protocol):
    params: Any

    def encode_images(self, params, images01): ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


def check_model(obj, what: str = "image-text model") -> ImageTextModel:
    """``obj`` if it has ``params``, ``encode_images`` and ``encode_texts``; else a
    ``UserError`` naming what is missing."""
    missing = [n for n in ("params", "encode_images", "encode_texts") if not hasattr(obj, n)]
    if missing:
        raise UserError(f"{what} ({type(obj).__name__}) lacks {', '.join(missing)}: an "
                        "image-text model needs params, encode_images(params, images01) "
                        "and encode_texts(texts)")
    return obj


def load_imagetext(spec: str = "world") -> ImageTextModel:
    """``world`` (the shipped world model), a world-style checkpoint directory
    (``config.json`` + ``params/``), ``hf:NAME`` (a ``transformers`` CLIP) or
    ``py:MODULE:FACTORY``."""
    if spec.startswith("hf:"):
        if not spec[3:]:
            raise UserError("image-text model 'hf:' names no model: use hf:NAME (a hub "
                            "name such as openai/clip-vit-base-patch32, or a folder)")
        from jaxdissect.imagetext_hf import load_hf_clip
        return load_hf_clip(spec[3:])
    if spec == "world":
        from jaxdissect.world.imagetext import load_imagetext as world
        return world()
    if spec.startswith("py:"):
        try:
            mod, attr = spec[3:].rsplit(":", 1)
            obj = getattr(importlib.import_module(mod), attr)
        except (ValueError, ImportError, AttributeError) as e:
            raise UserError(f"image-text model {spec!r}: cannot load ({e}); expected "
                            "py:MODULE:FACTORY") from None
        if callable(obj) and not hasattr(obj, "encode_texts"):
            obj = obj()
        return check_model(obj, f"image-text model {spec!r}")
    import os
    if os.path.isdir(spec):
        from jaxdissect.world.imagetext import load_imagetext as world
        return world(spec)
    raise UserError(f"unknown image-text model {spec!r}: use world, a checkpoint directory, "
                    "hf:NAME or py:MODULE:FACTORY")


def read_concepts(path: str) -> list[str]:
    """A concept list: one concept per line (blank lines and ``#`` comments skipped),
    duplicates refused."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 24)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"concept list {path!r}: cannot read ({e})") from None
    return parse_concepts(text, path)


def parse_concepts(text: str, what: str = "concept list") -> list[str]:
    concepts = [line.strip() for line in text.splitlines()]
    concepts = [c for c in concepts if c and not c.startswith("#")]
    if not concepts:
        raise UserError(f"{what}: no concepts (one per line)")
    seen, dup = set(), []
    for c in concepts:
        if c in seen:
            dup.append(c)
        seen.add(c)
    if dup:
        raise UserError(f"{what}: repeated concepts {sorted(set(dup))[:5]}")
    return concepts
