"""Unit thumbnails: a unit's top images with its above-threshold region highlighted.

The region where the unit's upsampled activation exceeds its threshold keeps its
colours and gets a yellow outline; the rest of the image is dimmed, as in the
reference's unit visualisations.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from jaxdissect.report.pictures import mask_edge

OUTLINE = np.array([1.0, 0.9, 0.0], np.float32)


def highlight(image: np.ndarray, mask: np.ndarray, dim: float = 0.35) -> np.ndarray:
    """``image [H,W,3]`` in [0,1], ``mask [H,W]`` bool -> highlighted ``[H,W,3]`` uint8."""
    image = np.asarray(image, np.float32)
    mask = np.asarray(mask, bool)
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    out = np.where(mask[..., None], image, image * dim)
    out[mask_edge(mask)] = OUTLINE      # mask pixels with a 4-neighbour outside it
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def resize_mask(act: np.ndarray, threshold: float, size: tuple[int, int]) -> np.ndarray:
    """Bilinear-resize one activation map ``[h,w]`` to ``size`` and threshold it."""
    a = Image.fromarray(np.asarray(act, np.float32), mode="F")
    big = np.asarray(a.resize((size[1], size[0]), Image.BILINEAR), np.float32)
    return big > threshold


def unit_strip(images: np.ndarray, masks: np.ndarray, size: int = 96, gap: int = 2) -> Image.Image:
    """``images [k,H,W,3]`` and ``masks [k,H,W]`` -> one row of k highlighted tiles."""
    k = len(images)
    strip = Image.new("RGB", (k * size + (k - 1) * gap, size), (255, 255, 255))
    for i, (img, m) in enumerate(zip(images, masks)):
        tile = Image.fromarray(highlight(img, m)).resize((size, size), Image.NEAREST
                                                         if img.shape[0] < size else
                                                         Image.BILINEAR)
        strip.paste(tile, (i * (size + gap), 0))
    return strip
