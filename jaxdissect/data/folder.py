"""Images in class folders (the reference's Places layout) as an ``ImageSource``.

``root/<class name>/<image>.jpg`` (any depth below the class folder); classes are
the sorted folder names, images sorted by path. Each image is resized to 256x256
and centre-cropped to 224x224, as the reference's Places365 transform does
(``Resize((256, 256))``, ``CenterCrop(224)``); pixels are RGB float32 in [0, 1].
The Places365 archives the reference publishes unpack to ``places/val/...`` and
``places/train/...``: point ``root`` at ``val`` or ``train``.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


class ImageFolderSource:
    seg_labels = None

    def __init__(self, root: str, resize: int = 256, crop: int = 224):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root!r} does not exist")
        classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        if not classes:
            raise ValueError(f"{root!r} has no class sub-folders (expected root/<class>/*.jpg)")
        items = []
        for c, name in enumerate(classes):
            for dirpath, _, files in sorted(os.walk(os.path.join(root, name))):
                items += [(os.path.join(dirpath, f), c) for f in sorted(files)
                          if f.lower().endswith(EXTENSIONS)]
        if not items:
            raise ValueError(f"{root!r} has class folders but no images ({EXTENSIONS})")
        if crop > resize:
            raise ValueError(f"crop {crop} is larger than resize {resize}")
        self.root, self.resize, self.crop = root, resize, crop
        self.class_names = tuple(classes)
        self.paths = [p for p, _ in items]
        self.labels = np.array([c for _, c in items], np.int32)
        self.num_examples = len(items)

    def identity(self) -> dict:
        """The folder, its files (path, size, modification time) and preprocessing,
        for content-keyed caches: adding, removing or rewriting an image changes it."""
        import hashlib
        h = hashlib.sha256()
        for p in self.paths:
            st = os.stat(p)
            h.update(f"{os.path.relpath(p, self.root)}\0{st.st_size}\0{st.st_mtime_ns}\n"
                     .encode())
        return {"source": "folder", "root": os.path.abspath(self.root),
                "num_examples": self.num_examples, "files": h.hexdigest()[:32],
                "classes": list(self.class_names), "resize": self.resize, "crop": self.crop,
                "transform": "RGB bilinear resize square, centre crop, /255"}

    def load(self, path: str) -> np.ndarray:
        """One image ``[crop, crop, 3]`` float32 in [0, 1]."""
        with Image.open(path) as im:
            im = im.convert("RGB").resize((self.resize, self.resize), Image.BILINEAR)
        off = (self.resize - self.crop) // 2
        a = np.asarray(im, np.float32)[off:off + self.crop, off:off + self.crop] / 255.0
        return a

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        if not 0 <= start <= stop <= self.num_examples:
            raise IndexError(f"range [{start}, {stop}) outside 0..{self.num_examples}")
        imgs = [self.load(p) for p in self.paths[start:stop]]
        image = np.stack(imgs) if imgs else np.zeros((0, self.crop, self.crop, 3), np.float32)
        return {"image": image, "label": self.labels[start:stop]}
