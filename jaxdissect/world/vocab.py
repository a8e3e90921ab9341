"""The world's concept vocabulary and its colour-naming rule.

One ``LabelSet`` (``LABELS``) holds every concept; a world segmentation is
``[b, 4, H, W]`` with layer 0 = object, 1 = part, 2 = material, 3 = colour,
each pixel's value indexing ``LABELS.names`` (0 = none), so it has exactly the
format a ``Segmenter`` returns.
"""

from __future__ import annotations

import numpy as np

from jaxdissect.labels import LabelSet

OBJECTS = ("sky", "cloud", "sun", "mountain", "snow", "tree", "grass", "water", "sand",
           "house", "door", "window", "road", "car", "bed", "lamp", "wall", "floor",
           "field", "fence", "boat")
PARTS = ("roof", "chimney", "trunk", "wheel", "windshield", "pane", "headboard",
         "pillow", "lampshade", "sail")
MATERIALS = ("wood", "brick", "painted", "glass", "foliage", "metal", "fabric", "rock",
             "tile", "carpet")
#: the 11 colour names of Broden, in its order
COLORS = ("black", "blue", "brown", "green", "grey", "orange", "pink", "purple", "red",
          "white", "yellow")

#: category of each layer of a world segmentation, in layer order
LAYERS = ("object", "part", "material", "color")

LABELS = LabelSet.from_pairs(
    [(n, "object") for n in OBJECTS] + [(n, "part") for n in PARTS]
    + [(n, "material") for n in MATERIALS] + [(n, "color") for n in COLORS])


def label_id(name: str) -> int:
    """Index of concept ``name`` in ``LABELS``."""
    return LABELS.index(name)


def layer_ids(layer: str) -> np.ndarray:
    """Label indices of one layer's category, e.g. ``layer_ids("part")``."""
    if layer not in LAYERS:
        raise ValueError(f"unknown world layer {layer!r}; layers are {LAYERS}")
    return np.array([i for i, c in enumerate(LABELS.categories) if c == layer], np.int64)


def name_colors(rgb: np.ndarray) -> np.ndarray:
    """Colour name of each RGB triple in [0, 1] (``[..., 3]`` -> ``[...]`` index into
    ``COLORS``), a hue/saturation/value rule in the spirit of Broden's colour names."""
    rgb = np.asarray(rgb, np.float64)
    mx, mn = rgb.max(-1), rgb.min(-1)
    chroma = mx - mn
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(mx == r, ((g - b) / safe) % 6,
                   np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60.0
    sat = np.where(mx > 0, chroma / np.where(mx > 0, mx, 1.0), 0.0)
    c = {n: i for i, n in enumerate(COLORS)}
    warm_dark = mx < 0.6
    by_hue = np.select(
        [(hue < 15) | (hue >= 330),
         hue < 45, hue < 70, hue < 165, hue < 260, hue < 290],
        [np.where((sat < 0.55) & (mx >= 0.7), c["pink"],
                  np.where(warm_dark, c["brown"], c["red"])),
         np.where((sat >= 0.55) & (mx >= 0.7), c["orange"], c["brown"]),
         np.where(mx >= 0.55, c["yellow"], c["brown"]),
         c["green"], c["blue"], c["purple"]],
        np.where(mx >= 0.6, c["pink"], c["purple"]))
    achromatic = (chroma < 0.1) | (sat < 0.12)
    gray = np.where(mx < 0.25, c["black"], np.where(mx > 0.8, c["white"], c["grey"]))
    out = np.where(mx < 0.16, c["black"], np.where(achromatic, gray, by_hue))
    return out.astype(np.uint8)


def _color_lut() -> np.ndarray:
    """``[32768]`` colour-name index (into ``LABELS``) of each 5-bit-per-channel RGB."""
    q = (np.arange(32) * 8 + 4) / 255.0
    grid = np.stack(np.meshgrid(q, q, q, indexing="ij"), -1).reshape(-1, 3)
    first = int(layer_ids("color")[0])
    return (name_colors(grid).astype(np.int64) + first).astype(np.uint8)


COLOR_LUT = _color_lut()


def color_layer(image_u8: np.ndarray) -> np.ndarray:
    """``[..., 3]`` uint8 RGB -> ``[...]`` uint8 colour label (index into ``LABELS``)."""
    image_u8 = np.asarray(image_u8)
    if image_u8.dtype != np.uint8 or image_u8.shape[-1] != 3:
        raise ValueError(f"color_layer wants uint8 [..., 3] RGB, got {image_u8.dtype} "
                         f"{image_u8.shape}")
    q = image_u8 >> 3
    idx = (q[..., 0].astype(np.int32) << 10) | (q[..., 1].astype(np.int32) << 5) | q[..., 2]
    return COLOR_LUT[idx]
