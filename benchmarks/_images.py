"""Synthetic JPEG folders for the data and accelerator benchmarks: ``n`` images of
``size x size`` in class folders, each a smooth random colour field with edges and
mild noise (closer to a photograph's JPEG than white noise, which decodes slowly),
written with Pillow at quality 90, as many per second as the cores allow."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def synthetic_image(i: int, size: int, seed: int = 0) -> np.ndarray:
    """Image ``i`` ``[size, size, 3]`` uint8: a function of ``(seed, i)`` only."""
    from PIL import Image
    rng = np.random.default_rng([seed, i])
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.int16)
    for _ in range(3):  # a few hard-edged rectangles
        y, x = rng.integers(0, size, 2)
        h, w = rng.integers(size // 8, size // 2, 2)
        img[y:y + h, x:x + w] = rng.integers(0, 256, 3)
    img += rng.integers(-8, 9, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_jpeg_folder(root: str, n: int, size: int = 256, classes: int = 10,
                      seed: int = 0, workers: int | None = None) -> str:
    """Writes (once: an existing complete folder is reused) ``n`` JPEGs under
    ``root/<class>/<index>.jpg``; returns ``root``."""
    from PIL import Image
    done = os.path.join(root, f".complete-{n}-{size}-{classes}-{seed}")
    if os.path.exists(done):
        return root
    for c in range(classes):
        os.makedirs(os.path.join(root, f"class{c:03d}"), exist_ok=True)

    def write(i):
        path = os.path.join(root, f"class{i % classes:03d}", f"{i:06d}.jpg")
        Image.fromarray(synthetic_image(i, size, seed)).save(path, quality=90)

    with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        list(pool.map(write, range(n)))
    open(done, "w").close()
    return root
