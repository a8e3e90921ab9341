"""Images in class folders (the reference's Places layout) as an ``ImageSource``.

``root/<class name>/<image>.jpg`` (any depth below the class folder); images sorted
by path. Classes: with ``class_names`` (the model's, in its output order) each folder
must be one of them and ``label`` is the model's index of its name; without, the
sorted folder names. How an image reaches ``size`` is the model's ``policy``:
``"resize-crop"``, the reference's Places365 transform (``Resize((256, 256))``,
``CenterCrop(224)``, scaled to ``size``), or ``"stretch"`` (the whole image resized
to ``size``: models trained on whole images, such as the world's). Pixels are RGB
float32 in [0, 1].
The Places365 archives the reference publishes unpack to ``places/val/...`` and
``places/train/...``: point ``root`` at ``val`` or ``train``.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from jaxdissect.data.workers import check_workers, default_workers, map_ordered

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


class ImageFolderSource:
    """``skip_bad``: decode every image once up front and leave out those that cannot
    be read (listed in ``skipped`` as ``(path, reason)``); otherwise an unreadable
    image is a ``ValueError`` naming its file when its batch is read. ``workers``:
    threads decoding a batch's images in parallel (``data.workers``; default: one
    per usable core); the pixels do not depend on it."""

    seg_labels = None

    def __init__(self, root: str, size: tuple[int, int] = (224, 224),
                 policy: str = "resize-crop", class_names=None, skip_bad: bool = False,
                 workers: int | None = None):
        self.workers = default_workers() if workers is None else check_workers(workers)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root!r} does not exist")
        if policy not in ("resize-crop", "stretch"):
            raise ValueError(f"policy must be 'resize-crop' or 'stretch', not {policy!r}")
        folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        if not folders:
            raise ValueError(f"{root!r} has no class sub-folders (expected root/<class>/*.jpg)")
        if class_names is None:
            class_names = tuple(folders)
        else:
            class_names = tuple(class_names)
            unknown = [f for f in folders if f not in class_names]
            if unknown:
                raise ValueError(f"{root!r}: folders {unknown} are not classes of the model "
                                 f"(its classes: {list(class_names)})")
        items = []
        for name in folders:
            c = class_names.index(name)
            for dirpath, _, files in sorted(os.walk(os.path.join(root, name))):
                items += [(os.path.join(dirpath, f), c) for f in sorted(files)
                          if f.lower().endswith(EXTENSIONS)]
        if not items:
            raise ValueError(f"{root!r} has class folders but no images ({EXTENSIONS})")
        self.root, self.size, self.policy = root, tuple(size), policy
        self.skipped: list[tuple[str, str]] = []
        if skip_bad:
            good = []
            for (path, c), err in zip(items, map_ordered(self._problem, [p for p, _ in items],
                                                         self.workers)):
                if err is None:
                    good.append((path, c))
                else:
                    self.skipped.append((path, err))
            if not good:
                raise ValueError(f"{root!r}: none of its {len(items)} images can be read")
            items = good
        self.class_names = class_names
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
                "classes": list(self.class_names), "size": list(self.size),
                "policy": self.policy, "skipped": len(self.skipped),
                "transform": "RGB bilinear resize (stretch, or resize-crop at 256/224), /255"}

    def load(self, path: str, out: np.ndarray | None = None) -> np.ndarray:
        """One image ``[H, W, 3]`` (``size``) float32 in [0, 1] (written into ``out`` if
        given); ``ValueError`` naming the file if it cannot be decoded (corrupt,
        truncated, not an image, too large)."""
        try:
            return self._load(path, out)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"{path}: cannot read this image ({type(e).__name__}: "
                             f"{str(e).strip() or 'no detail'}); remove it or pass "
                             f"--skip-bad-images") from None

    def _problem(self, path: str) -> str | None:
        try:
            self.load(path)
        except ValueError as e:
            return str(e)
        return None

    def _load(self, path: str, out: np.ndarray | None = None) -> np.ndarray:
        h, w = self.size
        with Image.open(path) as im:
            im = im.convert("RGB")
            if self.policy == "stretch":
                im = im.resize((w, h), Image.BILINEAR)
            else:
                # Places365: resize to 256x256, centre crop 224, for a 224 input
                rh, rw = round(h * 256 / 224), round(w * 256 / 224)
                im = im.resize((rw, rh), Image.BILINEAR)
                oy, ox = (rh - h) // 2, (rw - w) // 2
                im = im.crop((ox, oy, ox + w, oy + h))
            pixels = np.asarray(im)
        out = np.empty((h, w, 3), np.float32) if out is None else out
        # uint8 -> float32, then / 255 in float32: the same numbers as float32 / 255.0
        return np.divide(pixels, np.float32(255), out=out, dtype=np.float32)

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        if not 0 <= start <= stop <= self.num_examples:
            raise IndexError(f"range [{start}, {stop}) outside 0..{self.num_examples}")
        image = np.empty((stop - start, *self.size, 3), np.float32)

        map_ordered(lambda i: self.load(self.paths[start + i], image[i]),
                    range(stop - start), self.workers)
        return {"image": image, "label": self.labels[start:stop]}
