"""Images brought to a model's input size, the model's way, whatever source they
come from.

``at_input_size(source, spec)`` is the source a classifier reads: ``source`` itself
when its images already have ``spec.input_size``, else a :class:`Resized` view of it.
``Resized`` resizes each image bilinearly (in float32, no rounding) by the spec's
``resize`` policy, as ``ImageFolderSource`` does for files:

* ``"stretch"``: the whole image to ``(H, W)``; a ground-truth ``seg`` still covers
  the whole image and stays as it is;
* ``"resize-crop"``: to ``round((H, W) * 256 / 224)``, then the centre ``(H, W)``
  (the Places365 transform); ``seg`` keeps its grid but shows the same centre
  window (nearest neighbour at pixel centres), so each label stays under its pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

POLICIES = ("stretch", "resize-crop")


def crop_window(size: tuple[int, int], policy: str):
    """``(resized (rh, rw), offset (oy, ox))`` of an image brought to ``size``."""
    h, w = size
    if policy == "stretch":
        return (h, w), (0, 0)
    rh, rw = round(h * 256 / 224), round(w * 256 / 224)
    return (rh, rw), ((rh - h) // 2, (rw - w) // 2)


def resize_image(image: np.ndarray, size: tuple[int, int], policy: str) -> np.ndarray:
    """One image ``[h, w, 3]`` float32 -> ``[*size, 3]`` by ``policy`` (bilinear)."""
    (rh, rw), (oy, ox) = crop_window(size, policy)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32),
                                           mode="F").resize((rw, rh), Image.BILINEAR))
                for c in range(image.shape[-1])]
    out = np.stack(channels, -1)
    return out[oy:oy + size[0], ox:ox + size[1]]


def crop_seg(seg: np.ndarray, size: tuple[int, int], policy: str) -> np.ndarray:
    """``seg [b, K, Hs, Ws]`` of the original image -> the same grid over the part of
    the image that ``policy`` keeps (nearest neighbour at pixel centres)."""
    if policy == "stretch":
        return seg
    (rh, rw), (oy, ox) = crop_window(size, policy)
    hs, ws = seg.shape[-2:]
    rows = ((oy + (np.arange(hs) + 0.5) * size[0] / hs) / rh * hs).astype(np.int64)
    cols = ((ox + (np.arange(ws) + 0.5) * size[1] / ws) / rw * ws).astype(np.int64)
    return seg[..., np.clip(rows, 0, hs - 1)[:, None], np.clip(cols, 0, ws - 1)[None, :]]


class Resized:
    """``source`` with its ``image`` at ``size`` by ``policy`` (an ``ImageSource``)."""

    def __init__(self, source, size: tuple[int, int], policy: str):
        if policy not in POLICIES:
            raise ValueError(f"resize policy must be one of {POLICIES}, got {policy!r}")
        self.inner, self.size, self.policy = source, tuple(int(s) for s in size), policy
        self.num_examples = source.num_examples
        self.seg_labels = getattr(source, "seg_labels", None)
        self.class_names = getattr(source, "class_names", None)

    def identity(self) -> dict:
        from jaxdissect.runtime.fingerprint import data_identity
        return {"resized": list(self.size), "policy": self.policy,
                "transform": "float32 bilinear; seg nearest, cropped as the image",
                "of": data_identity(self.inner)}

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        b = dict(self.inner.batch(start, stop))
        if "image" in b:
            images = np.asarray(b["image"], np.float32)
            b["image"] = np.stack([resize_image(im, self.size, self.policy) for im in images]) \
                if len(images) else np.zeros((0, *self.size, 3), np.float32)
        if "seg" in b:
            b["seg"] = crop_seg(np.asarray(b["seg"]), self.size, self.policy)
        return b


def world_render_size(input_size) -> int:
    """The world's rendering size (32, 64 or 128) for a model input ``(H, W)``: the
    smallest at least as large, else 128."""
    side = max(input_size)
    return next((s for s in (32, 64, 128) if s >= side), 128)


def image_size(source) -> tuple[int, int]:
    """``(H, W)`` of ``source``'s images: the ``size`` it (or the source it wraps, through
    ``.inner``) declares, else that of its first image."""
    inner = source
    while not hasattr(inner, "size") and hasattr(inner, "inner"):
        inner = inner.inner
    size = getattr(inner, "size", None)
    if isinstance(size, int):
        return size, size
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return int(size[0]), int(size[1])
    return tuple(np.shape(source.batch(0, 1)["image"])[1:3])


def at_input_size(source, spec):
    """What a classifier ``spec`` reads of ``source``: its images at
    ``spec.input_size`` by ``spec.resize`` (``source`` itself where they already are)."""
    if spec.kind != "classifier" or source.num_examples == 0:
        return source
    if tuple(image_size(source)) == tuple(spec.input_size):
        return source
    return Resized(source, spec.input_size, spec.resize)
