"""Rasterising a batch of world scenes from their slot tables (vectorised NumPy).

A scene is a fixed list of *slots* drawn in painter's order (``SLOTS``); each
slot is one shape of one of four kinds, with 8 geometry numbers in unit image
coordinates (y down, x right, both in [0, 1]):

``band``    top(x) <= y < bottom(x), each edge ``a + amp * sin(2 pi f x + ph)``:
            ``[top_a, top_amp, top_f, top_ph, bot_a, bot_amp, bot_f, bot_ph]``
``trap``    ``y0 <= y < y1`` and ``|x - cx| < w0 + k (y - y0) + amp sin(f y + ph)``
            (rectangles, triangles, trapezoids, ridges):
            ``[y0, y1, cx, w0, k, amp, f, ph]``
``ellipse`` ``[cy, cx, ry, rx, 0, 0, 0, 0]``
``fence``   posts and two rails in ``y0 <= y < y1``:
            ``[y0, y1, period, post_w, phase, rail_y, rail_h, 0]``

Slots that an image does not use keep geometry that covers no pixel. Drawing
writes the slot index into a per-pixel id map; all colours and labels are then
gathered from per-image, per-slot tables, so a pixel's labels are exactly those
of the shape that is visible there.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdissect.world.vocab import color_layer

BAND, TRAP, ELLIPSE, FENCE = 0, 1, 2, 3

# texture kinds
FLAT, NOISE, BRICK, WOOD, WAVES, GLASS, WEAVE, TILE, BLOTCH, ROWS = range(10)


def _slot_list() -> tuple[tuple[str, int], ...]:
    s = [("base", BAND), ("sky", BAND), ("sun", ELLIPSE)]
    s += [(f"cloud{i}{p}", ELLIPSE) for i in range(2) for p in "abc"]
    for i in range(2):
        s += [(f"mountain{i}", TRAP), (f"cap{i}", TRAP)]
    s += [("far", BAND), ("water", BAND), ("near", BAND), ("road", BAND), ("fence", FENCE)]
    for i in range(2):
        s += [(f"boat{i}_hull", TRAP), (f"boat{i}_sail", TRAP)]
    for i in range(4):
        s += [(f"tree{i}_trunk", TRAP), (f"tree{i}_crown", ELLIPSE)]
    for i in range(2):
        s += [(f"house{i}_chimney", TRAP), (f"house{i}_wall", TRAP), (f"house{i}_roof", TRAP),
              (f"house{i}_door", TRAP)]
        for w in range(2):
            s += [(f"house{i}_win{w}", TRAP), (f"house{i}_pane{w}", TRAP)]
    for i in range(2):
        s += [(f"car{i}_cabin", TRAP), (f"car{i}_glass", TRAP), (f"car{i}_body", TRAP),
              (f"car{i}_wheel0", ELLIPSE), (f"car{i}_wheel1", ELLIPSE)]
    s += [("bed_head", TRAP), ("bed_frame", TRAP), ("bed_sheet", TRAP), ("bed_pillow", ELLIPSE),
          ("lamp_stand", TRAP), ("lamp_shade", TRAP)]
    return tuple(s)


#: ``(name, kind)`` of every slot, in drawing order (slot ids start at 1; 0 = unpainted)
SLOTS = _slot_list()
SLOT_ID = {name: i + 1 for i, (name, _) in enumerate(SLOTS)}
NUM_SLOTS = len(SLOTS) + 1

_EMPTY = {BAND: [2, 0, 0, 0, 2, 0, 0, 0], TRAP: [2, 2, 0, 0, 0, 0, 0, 0],
          ELLIPSE: [5, 5, 1e-3, 1e-3, 0, 0, 0, 0], FENCE: [2, 2, 1, 0, 0, 0, 0, 0]}


@dataclasses.dataclass
class SlotTables:
    """Per-image, per-slot description of ``n`` scenes (slot 0 is unused).

    ``geom`` ``[n, S, 8]`` float64 shape numbers, ``obj``/``part``/``mat``
    ``[n, S]`` uint8 label ids, ``tex`` ``[n, S]`` texture kind, ``color``
    ``[n, S, 3]`` base RGB in [0, 1], ``tex_amp`` and ``grad`` ``[n, S]``
    (texture contrast, vertical shading), and per image: ``bright`` ``[n]``,
    ``noise_amp`` ``[n]``, ``offset`` ``[n, 4]`` texture offsets in pixels.
    """

    geom: np.ndarray
    obj: np.ndarray
    part: np.ndarray
    mat: np.ndarray
    tex: np.ndarray
    color: np.ndarray
    tex_amp: np.ndarray
    grad: np.ndarray
    bright: np.ndarray
    noise_amp: np.ndarray
    offset: np.ndarray

    @classmethod
    def empty(cls, n: int) -> "SlotTables":
        geom = np.zeros((n, NUM_SLOTS, 8))
        for i, (_, kind) in enumerate(SLOTS):
            geom[:, i + 1] = _EMPTY[kind]
        z8 = lambda: np.zeros((n, NUM_SLOTS), np.uint8)
        return cls(geom=geom, obj=z8(), part=z8(), mat=z8(), tex=z8(),
                   color=np.zeros((n, NUM_SLOTS, 3)), tex_amp=np.zeros((n, NUM_SLOTS)),
                   grad=np.zeros((n, NUM_SLOTS)), bright=np.ones(n), noise_amp=np.zeros(n),
                   offset=np.zeros((n, 4)))


def _smooth_noise(size: int, sigma: float, seed: int) -> np.ndarray:
    """Tileable ``[size, size]`` Gaussian-smoothed white noise, unit variance."""
    white = np.random.default_rng(seed).standard_normal((size, size))
    f = np.fft.fftfreq(size)
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    out = np.real(np.fft.ifft2(np.fft.fft2(white) * kernel))
    return (out / out.std()).astype(np.float32)


_BANK = 128
_FINE = _smooth_noise(_BANK, 0.8, 11)
_COARSE = _smooth_noise(_BANK, 2.5, 12)


def _edge(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Wavy edge ``a + amp sin(2 pi f x + ph)``: ``p`` ``[m, 4]``, ``x`` ``[W]`` -> ``[m, W]``."""
    return p[:, :1] + p[:, 1:2] * np.sin(2 * np.pi * p[:, 2:3] * x + p[:, 3:4])


def _mask(kind: int, g: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Pixels covered by one slot in ``m`` images: ``g`` ``[m, 8]`` -> ``[m, H, W]`` bool."""
    if kind == BAND:
        top, bot = _edge(g[:, :4], x)[:, None, :], _edge(g[:, 4:], x)[:, None, :]
        yy = y[None, :, None]
        return (yy >= top) & (yy < bot)
    if kind == ELLIPSE:
        dy = ((y[None, :] - g[:, :1]) / g[:, 2:3]) ** 2
        dx = ((x[None, :] - g[:, 1:2]) / g[:, 3:4]) ** 2
        return dy[:, :, None] + dx[:, None, :] < 1.0
    if kind == TRAP:
        rows = (y[None, :] >= g[:, :1]) & (y[None, :] < g[:, 1:2])
        half = (g[:, 3:4] + g[:, 4:5] * (y[None, :] - g[:, :1])
                + g[:, 5:6] * np.sin(g[:, 6:7] * y[None, :] + g[:, 7:8]))
        half = np.where(rows, half, -1.0)
        return np.abs(x[None, None, :] - g[:, 2:3, None]) < half[:, :, None]
    if kind == FENCE:
        rows = (y[None, :] >= g[:, :1]) & (y[None, :] < g[:, 1:2])
        post = ((x[None, :] + g[:, 4:5]) % g[:, 2:3]) < g[:, 3:4]
        height = g[:, 1:2] - g[:, :1]
        rel = (y[None, :] - g[:, :1]) / np.where(height > 0, height, 1.0)
        rail = (np.abs(rel - g[:, 5:6]) < g[:, 6:7]) | (np.abs(rel - 2 * g[:, 5:6]) < g[:, 6:7])
        return rows[:, :, None] & (post[:, None, :] | (rail & rows)[:, :, None])
    raise ValueError(f"unknown slot kind {kind}")


def _pattern(k: int, py: np.ndarray, px: np.ndarray, ph: np.ndarray) -> np.ndarray:
    """Texture ``k`` at pixel coordinates ``py``, ``px`` (1-D, 64-pixel scale) with
    per-pixel phases ``ph`` ``[m, 2]``."""
    if k in (NOISE, BLOTCH):
        bank = _FINE if k == NOISE else _COARSE
        return bank[py.astype(np.int64) % _BANK, px.astype(np.int64) % _BANK]
    if k == BRICK:
        row = np.floor(py / 4.0)
        mortar = ((py % 4.0) < 1.0) | (((px + 4.0 * (row % 2)) % 8.0) < 1.0)
        return np.where(mortar, -1.2, 0.3)
    if k == WOOD:
        return np.sin(py * 1.3 + 2.0 * np.sin(px * 0.15 + ph[:, 0]))
    if k == WAVES:
        return np.sin(py * 1.6 + 1.5 * np.sin(px * 0.4 + ph[:, 1]))
    if k == GLASS:
        return np.where(((px - py) % 9.0) < 2.0, 1.0, -0.2)
    if k == WEAVE:
        return np.where(((px // 2 + py // 2) % 2) < 1, 0.6, -0.6)
    if k == TILE:
        return np.where((py % 3.0) < 1.0, -1.0, 0.3)
    if k == ROWS:
        return np.sin(px * 0.5 + py * 1.4)
    raise ValueError(f"unknown texture kind {k}")


def _textures(kind: np.ndarray, t: SlotTables) -> np.ndarray:
    """Texture value per pixel ``[n, H, W]`` float32 (roughly in [-1, 1]), evaluated
    only where each texture is used."""
    n, h, w = kind.shape
    s = np.float32(64.0 / h)  # patterns keep their size at every resolution
    out = np.zeros(n * h * w, np.float32)
    flat = kind.reshape(-1)
    off = t.offset.astype(np.float32)
    for k in np.unique(flat).tolist():
        if k == FLAT:
            continue
        idx = np.flatnonzero(flat == k)
        img, rem = np.divmod(idx, h * w)
        yy, xx = np.divmod(rem, w)
        o = off[img]
        out[idx] = _pattern(k, yy * s + o[:, 0], xx * s + o[:, 1], o[:, 2:])
    return out.reshape(n, h, w)


def rasterise(t: SlotTables, size: int, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` scenes: ``noise`` ``[n, size, size, 3]`` int8 pixel noise in [-64, 63].

    Returns ``image`` ``[n, size, size, 3]`` uint8 and ``seg`` ``[n, 4, size, size]``
    uint8 (object, part, material, colour label ids).
    """
    n = t.geom.shape[0]
    y = (np.arange(size) + 0.5) / size
    x = (np.arange(size) + 0.5) / size
    ids = np.zeros((n, size, size), np.uint8)
    for slot, (_, kind) in enumerate(SLOTS, start=1):
        rows = np.flatnonzero(~np.all(t.geom[:, slot] == _EMPTY[kind], axis=1))
        if rows.size == 0:
            continue
        m = _mask(kind, t.geom[rows, slot], y, x)
        if rows.size == n:
            ids[m] = slot
        else:
            sub = ids[rows]
            sub[m] = slot
            ids[rows] = sub
    flat = (np.arange(n)[:, None, None] * NUM_SLOTS + ids).reshape(-1)
    pick = lambda table: table.reshape(n * NUM_SLOTS, *table.shape[2:])[flat]
    kind = pick(t.tex).reshape(n, size, size)
    tex = _textures(kind, t)
    shade = (1.0 + pick(t.tex_amp).reshape(n, size, size) * tex
             + pick(t.grad).reshape(n, size, size) * (y[None, :, None] - 0.5))
    rgb = pick(t.color).reshape(n, size, size, 3) * (shade * t.bright[:, None, None])[..., None]
    rgb = rgb + noise.astype(np.float32) * (t.noise_amp[:, None, None, None] / 64.0)
    image = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    seg = np.stack([pick(t.obj).reshape(n, size, size), pick(t.part).reshape(n, size, size),
                    pick(t.mat).reshape(n, size, size), color_layer(image)], axis=1)
    return image, seg
