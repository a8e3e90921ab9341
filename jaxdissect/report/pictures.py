"""Pictures of edited generator outputs: tiles upscaled to a readable size, regions
outlined, composed into one PNG grid per figure.

A tile is an image ``[H, W, 3]`` in [0, 1] upscaled by an integer factor (nearest
neighbour, so the generator's own pixels stay visible) to at least ``TILE`` pixels
a side. An outline marks the boundary of a mask (pixels of the mask with a
4-neighbour outside it, the image border counting as outside), drawn at the tile's
resolution after the mask is brought to the tile's size by nearest neighbour, so a
mask of any grid (the segmentation's, the layer's) lands on the pixels it covers.

A written picture is a record ``{"src", "width", "height", ...}``: its file name
relative to the page, and the PNG's size in pixels, which the page states in the
``<img>``'s ``width`` and ``height`` (shown at 1:1).
"""

from __future__ import annotations

import html
import json
import math
import os
import re

import numpy as np
from PIL import Image

TILE = 128                      # minimum tile side in pixels
CHANGE = (255, 230, 0)          # yellow: pixels changed by the edit / the painted region
PLACE = (0, 220, 255)           # cyan: where the edit was made (a layer cell)
GAP = 4                         # white pixels between tiles


def to_u8(images01) -> np.ndarray:
    """Images in [0, 1] (any shape) -> uint8, clipped and rounded."""
    return (np.clip(np.asarray(images01, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def mask_edge(mask) -> np.ndarray:
    """``[H, W]`` bool -> the mask's pixels having a 4-neighbour outside the mask
    (outside the image counts as outside)."""
    mask = np.asarray(mask, bool)
    pad = np.pad(mask, 1, constant_values=False)
    return mask & ~(pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:])


def resize_nearest(mask, shape: tuple[int, int]) -> np.ndarray:
    """``[h, w]`` -> ``[H, W]``: pixel (i, j) takes ``mask[i * h // H, j * w // W]``."""
    mask = np.asarray(mask)
    h, w = mask.shape
    big_h, big_w = shape
    return mask[(np.arange(big_h) * h) // big_h][:, (np.arange(big_w) * w) // big_w]


def scale_for(height: int, minimum: int = TILE) -> int:
    """The smallest integer factor that brings ``height`` to at least ``minimum``."""
    return max(1, math.ceil(minimum / height))


def tile(image01, scale: int) -> np.ndarray:
    """``[H, W, 3]`` in [0, 1] -> ``[H * scale, W * scale, 3]`` uint8 (nearest)."""
    u8 = to_u8(image01)
    return np.repeat(np.repeat(u8, scale, axis=0), scale, axis=1)


def outline(image_u8, mask, color=CHANGE, width: int = 2) -> np.ndarray:
    """A copy of ``image_u8 [H, W, 3]`` with the boundary of ``mask`` (any ``[h,
    w]`` grid, resized to ``[H, W]``) drawn ``width`` pixels thick inside the mask."""
    out = np.array(image_u8, np.uint8, copy=True)
    m = resize_nearest(np.asarray(mask, bool), out.shape[:2])
    for _ in range(width):
        ring = mask_edge(m)
        out[ring] = color
        m = m & ~ring
    return out


def box_mask(shape: tuple[int, int], box) -> np.ndarray:
    """``[H, W]`` bool, True inside ``box = (y0, x0, y1, x1)`` (fractions of the
    image; rounded to pixels as ``experiments.paint.box_mask`` does)."""
    from jaxdissect.experiments.paint import box_mask as paint_box
    return paint_box(shape, box) > 0.5


def cell_box(y: int, x: int, grid: tuple[int, int]) -> tuple[float, float, float, float]:
    """The fraction box of cell ``(y, x)`` of an ``[h, w]`` layer grid."""
    h, w = grid
    return (y / h, x / w, (y + 1) / h, (x + 1) / w)


def compose(rows, gap: int = GAP) -> np.ndarray:
    """``rows [r][c]`` of equal-size uint8 tiles -> one ``[H, W, 3]`` grid, white
    between tiles and where a row is short."""
    th, tw = np.asarray(rows[0][0]).shape[:2]
    n_c = max(len(r) for r in rows)
    out = np.full((len(rows) * (th + gap) - gap, n_c * (tw + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            if np.asarray(t).shape[:2] != (th, tw):
                raise ValueError(f"tile ({i}, {j}) is {np.asarray(t).shape[:2]}, not "
                                 f"{(th, tw)}")
            out[i * (th + gap):i * (th + gap) + th, j * (tw + gap):j * (tw + gap) + tw] = t
    return out


def save_png(outdir: str, name: str, pixels: np.ndarray, **info) -> dict:
    """Writes ``pixels [H, W, 3]`` uint8 to ``outdir/name`` (atomically); returns the
    record ``{"src": name, "width": W, "height": H, **info}``."""
    from jaxdissect.runtime.cache import atomic_write
    img = Image.fromarray(np.asarray(pixels, np.uint8))
    path = os.path.join(outdir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda f: img.save(f, format="PNG"))
    return {"src": name, "width": img.width, "height": img.height, **info}


def png_record(outdir: str, name: str, **info) -> dict:
    """The record of an existing image file (its size read from the file)."""
    with Image.open(os.path.join(outdir, name)) as img:
        return {"src": name, "width": img.width, "height": img.height, **info}


PICTURES_JSON = "pictures.json"
FOLDER = "pictures"


def remove_others(outdir: str, records: list[dict]) -> None:
    """Deletes the PNGs under ``outdir/pictures`` that ``records`` do not name (an
    earlier run's pictures of other concepts), so the folder holds one run's."""
    folder = os.path.join(outdir, FOLDER)
    keep = {os.path.normpath(os.path.join(outdir, r["src"])) for r in records}
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        path = os.path.normpath(os.path.join(folder, name))
        if name.endswith(".png") and path not in keep:
            os.unlink(path)


def save_records(outdir: str, records: list[dict]) -> str:
    """``outdir/pictures.json``: the records a page shows, so the page can be rebuilt."""
    from jaxdissect.report import dump_json
    return dump_json(os.path.join(outdir, PICTURES_JSON), {"pictures": records})


def load_records(outdir: str) -> list[dict]:
    """The records ``save_records`` wrote (``[]`` if there are none)."""
    path = os.path.join(outdir, PICTURES_JSON)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)["pictures"]


# ---------------------------------------------------------------- the figures

def removal_strip(outdir: str, pics, name: str | None = None) -> dict:
    """Two rows of tiles from an ``experiments.intervene_pictures.EditPictures`` of
    kind "removal": the unedited samples, the concept's lost pixels outlined, and
    beneath them the same samples with the units zeroed."""
    scale = scale_for(pics.base.shape[1])
    top = [outline(tile(b, scale), c[0]) for b, c in zip(pics.base, pics.changed)]
    bottom = [tile(e[0], scale) for e in pics.edited]
    return save_png(outdir, name or f"{FOLDER}/removal_{_slug(pics.concept)}.png",
                    compose([top, bottom]), **_info(pics))


def insertion_grid(outdir: str, pics, name: str | None = None) -> dict:
    """One row per sample of an ``EditPictures`` of kind "insertion": the unedited
    image, then one tile per edited cell with the pixels that gained the concept
    outlined (yellow) and the cell marked (cyan)."""
    scale = scale_for(pics.base.shape[1])
    rows = []
    for b, edited, changed in zip(pics.base, pics.edited, pics.changed):
        row = [tile(b, scale)]
        for e, (y, x) in enumerate(pics.locations):
            t = outline(tile(edited[e], scale), changed[e])
            cell = box_mask(t.shape[:2], cell_box(int(y), int(x), pics.grid))
            row.append(outline(t, cell, PLACE))
        rows.append(row)
    return save_png(outdir, name or f"{FOLDER}/insertion_{_slug(pics.concept)}.png", compose(rows),
                    **_info(pics))


def _slug(name: str) -> str:
    """A concept name as a file name part (label names may hold spaces or slashes)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


def _info(pics) -> dict:
    return {"kind": pics.kind, "concept": pics.concept, "units": np.asarray(pics.units).tolist(),
            "samples": np.asarray(pics.samples).tolist(),
            "locations": np.asarray(pics.locations).tolist(), "grid": list(pics.grid),
            "changed_pixels": np.asarray(pics.changed).sum(axis=(2, 3)).tolist(),
            "segmentation_pixels": int(np.prod(np.asarray(pics.changed).shape[2:])),
            "edit": pics.edit, "which": pics.which, "alt": f"{pics.kind} of {pics.concept}"}


def caption(pic: dict) -> str:
    """The caption (HTML) of a removal strip or insertion grid record."""
    c = html.escape(pic["concept"])
    share = float(np.mean(pic["changed_pixels"])) / pic["segmentation_pixels"]
    samples = html.escape(pic["which"])
    if pic["kind"] == "removal":
        return (f"<b>Removing {c}</b>: top row, generated images ({samples}) with the "
                f"{c} pixels the edit removes outlined in yellow ({share:.1%} of the image "
                f"on average); bottom row, the same images with {html.escape(pic['edit'])}.")
    return (f"<b>Inserting {c}</b>: one row per image ({samples}); first the unedited "
            f"image, then {html.escape(pic['edit'])}, one location per column (cyan "
            f"square). Yellow outlines the pixels that became {c} ({share:.2%} of the "
            f"image on average over these {np.size(pic['changed_pixels'])} edits).")


def paint_grid(outdir: str, base, painted, boxes, name: str = "painted.png") -> dict:
    """Rows: one per latent; columns: the unedited image ``base [b, H, W, 3]``, then
    each edit ``painted [E, b, H, W, 3]`` with its ``boxes [E]`` (y0, x0, y1, x1
    fractions) outlined."""
    scale = scale_for(np.asarray(base).shape[1])
    rows = []
    for i, b in enumerate(base):
        row = [tile(b, scale)]
        for e, box in enumerate(boxes):
            t = tile(painted[e][i], scale)
            row.append(outline(t, box_mask(t.shape[:2], box)))
        rows.append(row)
    return save_png(outdir, name, compose(rows), alt="painted images")
