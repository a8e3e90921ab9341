"""Broden, the concept data set of the original NetDissect, as an ``ImageSource``.

Layout (as CSAILVision/NetDissect-Lite reads it), all paths below ``DIR``:

  ``index.csv``     ``image,split,ih,iw,sh,sw`` then one column per category
                    (``color,object,part,material,scene,texture`` in Broden): each a
                    ``;``-separated list of segmentation PNG names (per-pixel labels)
                    or label numbers (image-level labels, e.g. scenes, textures);
  ``images/``       the images (``image`` is relative to it) and the PNGs, whose
                    label at a pixel is ``R + 256 * G``;
  ``category.csv``  ``name,...``: the categories, in order;
  ``label.csv``     ``number,name,category,...``: the label names;
  ``c_<cat>.csv``   ``code,number,name,frequency,coverage``: the labels of each
                    category with their coverage.

Batches: ``image`` ``[b, H, W, 3]`` float32 in [0, 1] (resized bilinearly to
``size`` when given), ``seg`` ``[b, K, Hs, Ws]`` int32 at the index's ``(sh, sw)``
(nearest-neighbour resized to ``seg_size`` when given). The K label layers are
every category's slots in ``category.csv`` order, as many per category as the
most entries any image has there; an image-level label fills its layer, a missing
entry is 0 (none). ``seg_labels`` names every label number; a label's category is
its primary one as NetDissect picks it (of the categories listing it in their
``c_<cat>.csv``, the one with the largest coverage, the later category on ties).
As NetDissect does, images with no label in any category are left out.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re

import numpy as np
from PIL import Image

from jaxdissect.data.workers import check_workers, default_workers, map_ordered
from jaxdissect.labels import LabelSet

META = ("image", "split", "ih", "iw", "sh", "sw")
PREFIX = "broden:"


def _read_csv(path: str) -> tuple[list[str], list[dict[str, str]]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Broden data: {path} does not exist")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or ()), rows


def _int(row: dict, key: str, path: str) -> int:
    try:
        return int(row[key])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: column {key!r} must hold integers, got "
                         f"{row.get(key)!r}") from None


def read_labels(directory: str) -> tuple[LabelSet, tuple[str, ...]]:
    """``(LabelSet, categories)`` from ``label.csv``, ``category.csv`` and the
    ``c_<cat>.csv`` files: every label number 0..max (``"-"`` for 0, ``""`` for a
    number ``label.csv`` skips) with its primary category."""
    _, cats = _read_csv(os.path.join(directory, "category.csv"))
    categories = tuple(r["name"] for r in cats if r.get("name"))
    if not categories:
        raise ValueError(f"{directory}/category.csv lists no categories")
    path = os.path.join(directory, "label.csv")
    _, rows = _read_csv(path)
    names = {_int(r, "number", path): r.get("name", "") for r in rows}
    coverage: list[dict[int, float]] = []
    for cat in categories:
        cpath = os.path.join(directory, f"c_{cat}.csv")
        _, crows = _read_csv(cpath)
        coverage.append({_int(r, "number", cpath): float(r.get("coverage") or 0)
                         for r in crows})
    size = max(list(names) + [n for c in coverage for n in c] + [0]) + 1
    primary = []
    for n in range(size):
        # NetDissect's rule: max (coverage, category index) over the categories that
        # list the label (0 coverage elsewhere), so ties go to the later category
        _, best = max((c.get(n, 0.0), i) for i, c in enumerate(coverage))
        primary.append(categories[best])
    label_names = ("-",) + tuple(names.get(n, "") for n in range(1, size))
    return LabelSet(label_names, ("",) + tuple(primary[1:])), categories


def _entries(value: str) -> list[int | str]:
    """One index cell: label numbers as ints, PNG names as strings."""
    return [int(v) if re.fullmatch(r"\d+", v) else v for v in value.split(";") if v]


class BrodenSource:
    """``BrodenSource(dir, size=None, split=None, seg_size=None)``.

    ``size``: ``(H, W)`` or an int for the images (default: the index's ``(ih,
    iw)``, which must then be the same for every image); ``split``: keep only
    rows of that split (e.g. ``"train"``, ``"val"``); ``seg_size``: likewise for
    the segmentation (default the index's ``(sh, sw)``); ``workers``: threads reading
    a batch's images and label PNGs in parallel (``data.workers``; default one per
    usable core).
    """

    class_names = None

    def __init__(self, directory: str, size=None, split: str | None = None,
                 seg_size=None, workers: int | None = None):
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"Broden data: folder {directory!r} does not exist")
        self.directory, self.split = directory, split
        self.workers = default_workers() if workers is None else check_workers(workers)
        self.seg_labels, self.categories = read_labels(directory)
        path = os.path.join(directory, "index.csv")
        fields, rows = _read_csv(path)
        missing = [c for c in META + self.categories if c not in fields]
        if missing:
            raise ValueError(f"{path} lacks column(s) {', '.join(missing)}")
        if split is not None:
            rows = [r for r in rows if r["split"] == split]
        self.rows = []
        for r in rows:
            entries = {c: _entries(r[c] or "") for c in self.categories}
            if any(entries.values()):  # NetDissect drops images with no labels
                self.rows.append((r["image"], entries) + tuple(
                    _int(r, k, path) for k in ("ih", "iw", "sh", "sw")))
        if not self.rows:
            raise ValueError(f"{path}: no labelled images"
                             + (f" in split {split!r}" if split is not None else ""))
        self.size = self._common(size, 2, "image size", "size")
        self.seg_size = self._common(seg_size, 4, "segmentation size", "seg_size")
        #: each category's number of layers (the most entries an image has there)
        self.slots = {c: max(len(r[1][c]) for r in self.rows) for c in self.categories}
        self.num_layers = sum(self.slots.values())
        self.num_examples = len(self.rows)

    def identity(self) -> dict:
        """For content-keyed caches: the folder, its CSV files' bytes, every image and
        PNG used (path, size, modification time), split and sizes."""
        h = hashlib.sha256()
        for name in ("index.csv", "label.csv", "category.csv") + tuple(
                f"c_{c}.csv" for c in self.categories):
            with open(os.path.join(self.directory, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read())
        for image, entries, *_ in self.rows:
            for name in [image] + [e for v in entries.values() for e in v
                                   if isinstance(e, str)]:
                st = os.stat(self._path(name))
                h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {"source": "broden", "root": os.path.abspath(self.directory),
                "split": self.split, "num_examples": self.num_examples,
                "files": h.hexdigest()[:32], "size": list(self.size),
                "seg_size": list(self.seg_size),
                "transform": "RGB bilinear resize, /255; labels R + 256 G, nearest resize"}

    def _common(self, given, col: int, what: str, arg: str) -> tuple[int, int]:
        if given is not None:
            hw = (int(given), int(given)) if np.ndim(given) == 0 else tuple(map(int, given))
            if len(hw) != 2 or min(hw) <= 0:
                raise ValueError(f"{arg} must be a positive int or (H, W), got {given!r}")
            return hw
        sizes = {(r[col], r[col + 1]) for r in self.rows}
        if len(sizes) != 1:
            raise ValueError(f"Broden images differ in {what} ({len(sizes)} sizes); "
                             f"pass {arg}=(H, W)")
        return sizes.pop()

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, "images", name)

    def load_image(self, i: int) -> np.ndarray:
        """Image ``i`` ``[H, W, 3]`` float32 in [0, 1]."""
        with Image.open(self._path(self.rows[i][0])) as im:
            im = im.convert("RGB")
            if im.size != self.size[::-1]:
                im = im.resize(self.size[::-1], Image.BILINEAR)
            return np.asarray(im, np.float32) / 255.0

    def load_seg(self, i: int) -> np.ndarray:
        """Image ``i``'s label layers ``[K, Hs, Ws]`` int32."""
        out = np.zeros((self.num_layers,) + self.seg_size, np.int32)
        layer = 0
        for cat in self.categories:
            for j, entry in enumerate(self.rows[i][1][cat]):
                out[layer + j] = entry if isinstance(entry, int) else self._png(entry)
            layer += self.slots[cat]
        return out

    def _png(self, name: str) -> np.ndarray:
        with Image.open(self._path(name)) as im:
            rgb = np.asarray(im.convert("RGB"), np.int32)
        label = rgb[..., 0] + 256 * rgb[..., 1]
        if label.shape != self.seg_size:  # nearest neighbour, pixel centres
            rows = (np.arange(self.seg_size[0]) + 0.5) * label.shape[0] // self.seg_size[0]
            cols = (np.arange(self.seg_size[1]) + 0.5) * label.shape[1] // self.seg_size[1]
            label = label[rows.astype(int)][:, cols.astype(int)]
        return label

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        if not 0 <= start <= stop <= self.num_examples:
            raise IndexError(f"range [{start}, {stop}) outside 0..{self.num_examples}")
        idx = range(start, stop)
        image = np.zeros((0,) + self.size + (3,), np.float32)
        seg = np.zeros((0, self.num_layers) + self.seg_size, np.int32)
        if stop > start:
            pairs = map_ordered(lambda i: (self.load_image(i), self.load_seg(i)), idx,
                                self.workers)
            image = np.stack([p[0] for p in pairs])
            seg = np.stack([p[1] for p in pairs])
        return {"image": image, "seg": seg}


class BrodenSegmenter:
    """The data's own annotation in the segmenter's place (``--segmenter broden``):
    ``segment(batch)`` is the batch's ``seg``; there is nothing to compute from
    the images, so calling it on images is an error."""

    reads_batch = True

    def __init__(self, source):
        broden = innermost(source)
        if broden is None:
            raise ValueError("the broden segmenter reads Broden's annotation: use it with "
                             "--data broden:DIR")
        self.labels, self.num_layers = broden.seg_labels, broden.num_layers

    def segment(self, batch):
        return batch["seg"]

    def __call__(self, images):
        raise TypeError("the broden segmenter has no model: it reads the batch's 'seg' "
                        "(segment(batch))")


def innermost(source) -> BrodenSource | None:
    """The ``BrodenSource`` under ``source`` and any wrappers (``.inner``), or None."""
    while not isinstance(source, BrodenSource) and hasattr(source, "inner"):
        source = source.inner
    return source if isinstance(source, BrodenSource) else None


def is_broden_spec(spec: str) -> bool:
    return spec.startswith(PREFIX)


def broden_from_spec(spec: str, size=None, split: str | None = None) -> BrodenSource:
    """``"broden:DIR"`` -> ``BrodenSource(DIR, size=size, split=split)``."""
    if not is_broden_spec(spec) or not spec[len(PREFIX):]:
        raise ValueError(f"not a Broden data spec (expected broden:DIR): {spec!r}")
    return BrodenSource(os.path.expanduser(spec[len(PREFIX):]), size=size, split=split)
