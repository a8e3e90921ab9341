"""The world as an ordinary ``ImageSource``: images, class labels, ground truth."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from jaxdissect.labels import LabelSet
from jaxdissect.world.raster import SLOT_ID, SlotTables, rasterise
from jaxdissect.world.scenes import CLASS_NAMES, class_labels, scene_tables
from jaxdissect.world.vocab import LABELS, LAYERS

_CHUNK = 256  # images rasterised together (measured fastest on 2 cores)


def _renderer_hash() -> str:
    """sha256 of the modules that decide a world image (scenes, raster, vocab)."""
    import hashlib

    from jaxdissect.world import raster, scenes, vocab
    h = hashlib.sha256()
    for mod in (scenes, raster, vocab):
        with open(mod.__file__, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def render(seed: int, indices, size: int = 64) -> dict[str, np.ndarray]:
    """Render world images ``indices`` of world ``seed`` (single-threaded).

    Returns ``image`` ``[n, size, size, 3]`` uint8, ``label`` ``[n]`` int32 and
    ``seg`` ``[n, 4, size, size]`` uint8 (object, part, material, colour ids
    into ``LABELS``). Image ``i`` depends only on ``(seed, i, size)``.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"world seed must be a non-negative integer, got {seed!r}")
    if size not in (32, 64, 128):
        raise ValueError(f"world image size must be 32, 64 or 128, got {size}")
    indices = np.asarray(indices, np.int64).reshape(-1)
    if indices.size and indices.min() < 0:
        raise ValueError("world image indices must be non-negative")
    tables, labels, noise = scene_tables(int(seed), indices, size)
    image, seg = rasterise(tables, size, noise)
    return {"image": image, "label": labels.astype(np.int32), "seg": seg}


def render_closeup(seed: int, indices, size: int = 32, zoom: float = 1.5,
                   below: float = 0.04) -> dict[str, np.ndarray]:
    """World images ``indices`` seen ``zoom`` times as close: each is rendered at
    ``round(zoom * size)`` and the ``size`` x ``size`` window framing one of its
    houses is cut out (the house whose door ``(seed, i)`` picks: the door's column
    centred, the window's bottom ``below`` of the scene's height under the door's
    base). Images with no house get the centre window. Same keys and shapes as
    ``render(seed, indices, size)``.

    Why: at 32x32 a village door is about 3x4 pixels, one layer4 cell of a 32x32
    generator; framed this way doors, windows and trunks are larger, as LSUN's
    church photographs frame their church.
    """
    big = int(round(zoom * size))
    if not 1.0 <= zoom <= 4.0 or size not in (32, 64):
        raise ValueError(f"close-up wants size 32 or 64 and zoom in [1, 4], got {size}, {zoom}")
    render(seed, [], size)  # validates seed
    indices = np.asarray(indices, np.int64).reshape(-1)
    tables, labels, noise = scene_tables(int(seed), indices, big)
    image, seg = rasterise(tables, big, noise)
    y0, x0 = closeup_offsets(tables, seed, indices, size, big, below)
    rows = (y0[:, None] + np.arange(size))[:, :, None]
    cols = (x0[:, None] + np.arange(size))[:, None, :]
    n = np.arange(indices.size)[:, None, None]
    seg = seg.transpose(0, 2, 3, 1)[n, rows, cols].transpose(0, 3, 1, 2)
    return {"image": np.ascontiguousarray(image[n, rows, cols]),
            "label": labels.astype(np.int32), "seg": np.ascontiguousarray(seg)}


def render_mixed(seed: int, indices, size: int, every: int = 1,
                 zoom: float = 1.5) -> dict[str, np.ndarray]:
    """``render(seed, indices, size)`` with every image whose index ``i`` has
    ``i % every == every - 1`` replaced by its close-up (``render_closeup``):
    ``every=1`` gives close-ups only, ``every=2`` whole scenes and close-ups half and
    half."""
    if every < 1:
        raise ValueError(f"close-up period must be >= 1, got {every}")
    indices = np.asarray(indices, np.int64).reshape(-1)
    close = indices % every == every - 1
    whole = render(seed, indices[~close], size)  # only the images that stay whole
    if not close.any():
        return whole
    near = render_closeup(seed, indices[close], size, zoom)
    out = {k: np.empty((indices.size,) + v.shape[1:], v.dtype) for k, v in near.items()}
    for part, rows in ((whole, ~close), (near, close)):
        for k in out:
            out[k][rows] = part[k]
    return out


def closeup_offsets(tables: SlotTables, seed: int, indices: np.ndarray, size: int,
                    big: int, below: float) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corner ``(y0 [n], x0 [n])``, in pixels of the ``big`` render, of the
    window ``render_closeup`` cuts out of each image."""
    doors = [SLOT_ID[f"house{h}_door"] for h in range(2)]
    frac = size / big
    y0 = np.full(indices.size, (big - size) // 2)
    x0 = np.full(indices.size, (big - size) // 2)
    for j, i in enumerate(indices.tolist()):
        present = [s for s in doors if tables.obj[j, s] != 0]
        if not present:
            continue
        s = present[np.random.default_rng([seed, 3, i]).integers(len(present))]
        base, cx = tables.geom[j, s, 1], tables.geom[j, s, 2]
        y0[j] = round((base + below - frac) * big)
        x0[j] = round((cx - frac / 2) * big)
    return np.clip(y0, 0, big - size), np.clip(x0, 0, big - size)


def class_indices(seed: int, classes, num: int) -> np.ndarray:
    """The first ``num`` image indices of world ``seed`` whose scene class is one of
    ``classes`` (names from ``CLASS_NAMES``), in increasing order."""
    unknown = [c for c in classes if c not in CLASS_NAMES]
    if unknown or not classes:
        raise ValueError(f"unknown scene classes {unknown or classes!r}; classes are "
                         f"{', '.join(CLASS_NAMES)}")
    wanted = np.array([CLASS_NAMES.index(c) for c in classes])
    per_block = len(wanted)  # every block of len(CLASS_NAMES) holds each class once
    stop = -(-num // per_block) * len(CLASS_NAMES)
    idx = np.arange(stop)
    return idx[np.isin(class_labels(seed, idx), wanted)][:num]


class WorldSource:
    """``num_examples`` world scenes of one ``seed`` at ``size`` x ``size`` pixels.

    ``batch(start, stop)`` returns ``image`` ``[b, size, size, 3]`` float32 in
    [0, 1], ``label`` ``[b]`` int32 and ``seg`` ``[b, 4, size, size]`` int32.
    Rendering is split into chunks over ``threads`` threads (NumPy releases
    the GIL); the result does not depend on ``threads`` or the batch split.
    """

    seg_labels: LabelSet = LABELS
    class_names: tuple[str, ...] = CLASS_NAMES
    layers: tuple[str, ...] = LAYERS

    def __init__(self, num_examples: int = 10_000, seed: int = 0, size: int = 64,
                 threads: int = 2):
        if num_examples <= 0:
            raise ValueError(f"num_examples must be positive, got {num_examples}")
        if threads <= 0:
            raise ValueError(f"threads must be positive, got {threads}")
        render(seed, [], size)  # validates seed and size
        self.num_examples, self.seed, self.size, self.threads = num_examples, seed, size, threads

    def identity(self) -> dict:
        """World seed, size, count and the rendering code's hash (for content-keyed
        caches; ``threads`` does not change an image)."""
        return {"source": "world", "num_examples": self.num_examples, "seed": self.seed,
                "size": self.size, "renderer": _renderer_hash()}

    def render_u8(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Like ``batch`` but with uint8 ``image`` and ``seg`` (compact)."""
        if not 0 <= start <= stop <= self.num_examples:
            raise IndexError(f"range [{start}, {stop}) outside 0..{self.num_examples}")
        starts = list(range(start, stop, _CHUNK))
        job = lambda a: render(self.seed, np.arange(a, min(a + _CHUNK, stop)), self.size)
        if self.threads > 1 and len(starts) > 1:
            with ThreadPoolExecutor(self.threads) as pool:
                parts = list(pool.map(job, starts))
        else:
            parts = [job(a) for a in starts]
        if not parts:
            parts = [render(self.seed, [], self.size)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        out = self.render_u8(start, stop)
        return {"image": out["image"].astype(np.float32) / np.float32(255.0),
                "label": out["label"], "seg": out["seg"].astype(np.int32)}
