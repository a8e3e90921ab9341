"""Scene classes of the world: which objects appear, where, and in what style.

Each image ``i`` of a world with seed ``s`` draws its numbers from its own
stream ``default_rng([s, 0, i])``, so an image depends only on ``(s, i)``, never
on the batch it is rendered in. Class samplers are vectorised over all images of
one class: every call of ``Draw`` consumes one column of the images' uniform
numbers, so a parameter is the same function of an image's stream for all of them.
"""

from __future__ import annotations

import numpy as np

from jaxdissect.world import raster as R
from jaxdissect.world.vocab import label_id

CLASS_NAMES = ("beach", "desert", "forest", "lake", "ski_resort", "farm", "village",
               "street", "highway", "harbor", "bedroom")

_COLUMNS = 640  # uniforms per image; a sampler that needs more raises


def _rgb(*cs):
    return np.array(cs, np.float64) / 255.0


PALETTE = {
    "sky": _rgb((110, 170, 235), (150, 200, 245), (70, 120, 210), (235, 150, 110),
                (170, 175, 185), (120, 150, 200)),
    "cloud": _rgb((245, 245, 250), (215, 217, 225), (240, 205, 205), (190, 190, 200)),
    "sun": _rgb((255, 230, 90), (255, 175, 60), (255, 250, 210)),
    "mountain": _rgb((120, 115, 110), (130, 100, 75), (100, 110, 135), (115, 100, 130),
                     (90, 95, 90)),
    "snow": _rgb((240, 242, 248), (225, 230, 242), (250, 250, 250)),
    "crown": _rgb((50, 120, 45), (80, 150, 60), (35, 90, 40), (200, 120, 40), (180, 60, 40),
                  (210, 190, 60), (60, 110, 80)),
    "pine": _rgb((30, 80, 45), (40, 95, 60), (25, 65, 40)),
    "trunk": _rgb((100, 70, 40), (80, 55, 35), (120, 90, 60), (70, 60, 55)),
    "grass": _rgb((90, 160, 70), (120, 180, 80), (70, 130, 50), (150, 170, 80), (60, 150, 90)),
    "water": _rgb((50, 110, 180), (40, 140, 170), (70, 90, 140), (30, 80, 120), (80, 150, 200)),
    "sand": _rgb((225, 200, 150), (210, 180, 120), (235, 215, 170), (200, 160, 110)),
    "brick": _rgb((170, 80, 60), (150, 70, 50), (180, 110, 80), (130, 120, 115)),
    "painted": _rgb((240, 235, 220), (245, 220, 130), (230, 180, 190), (170, 200, 230),
                    (200, 220, 170), (200, 90, 70)),
    "roof": _rgb((150, 50, 40), (90, 60, 45), (70, 70, 80), (40, 70, 120), (180, 100, 50)),
    "door": _rgb((110, 70, 40), (140, 40, 40), (40, 90, 60), (50, 70, 120), (150, 110, 70)),
    "frame": _rgb((245, 245, 245), (110, 75, 45), (60, 60, 60)),
    "glass": _rgb((150, 190, 220), (120, 160, 200), (180, 210, 230), (60, 80, 110)),
    "road": _rgb((80, 80, 85), (100, 100, 105), (60, 60, 65), (115, 110, 100)),
    "car": _rgb((200, 40, 40), (40, 70, 170), (230, 200, 50), (235, 235, 235), (30, 30, 35),
                (140, 140, 145), (40, 130, 70), (230, 120, 30), (120, 50, 140)),
    "tyre": _rgb((25, 25, 25), (45, 45, 50)),
    "bedwood": _rgb((120, 80, 45), (150, 110, 70), (90, 60, 40), (170, 130, 90)),
    "sheet": _rgb((240, 240, 240), (150, 180, 220), (220, 150, 170), (200, 60, 60),
                  (120, 90, 160), (230, 210, 120), (120, 170, 120)),
    "pillow": _rgb((250, 250, 250), (220, 220, 230), (240, 225, 200)),
    "shade": _rgb((240, 225, 180), (230, 230, 230), (200, 80, 60), (120, 160, 120)),
    "stand": _rgb((90, 90, 95), (180, 160, 90), (40, 40, 40)),
    "wall": _rgb((235, 225, 205), (200, 215, 230), (230, 200, 200), (210, 230, 200),
                 (240, 240, 240), (200, 170, 210), (190, 160, 120)),
    "woodfloor": _rgb((150, 100, 60), (120, 80, 50), (180, 140, 90)),
    "carpet": _rgb((140, 60, 60), (90, 90, 130), (150, 150, 140), (190, 170, 140)),
    "field": _rgb((200, 180, 90), (150, 170, 70), (140, 100, 60), (190, 150, 70)),
    "fence": _rgb((150, 110, 70), (230, 230, 230), (110, 80, 50)),
    "hull": _rgb((120, 80, 50), (200, 50, 50), (240, 240, 240), (50, 80, 150)),
    "sail": _rgb((245, 245, 240), (230, 90, 70), (240, 220, 120)),
}


class Draw:
    """Hands out one column of per-image uniforms ``u`` ``[n, C]`` per call."""

    def __init__(self, u: np.ndarray):
        self.u, self.col = u, 0

    def _next(self) -> np.ndarray:
        if self.col >= self.u.shape[1]:
            raise RuntimeError("world scene sampler used more uniforms than reserved")
        self.col += 1
        return self.u[:, self.col - 1]

    def uniform(self, lo, hi) -> np.ndarray:
        return lo + (np.asarray(hi) - lo) * self._next()

    def coin(self, p) -> np.ndarray:
        return self._next() < p

    def pick(self, k: int) -> np.ndarray:
        return np.minimum((self._next() * k).astype(np.int64), k - 1)

    def color(self, palette: str) -> np.ndarray:
        """``[n, 3]`` a palette entry with random brightness and per-channel tint."""
        base = PALETTE[palette][self.pick(len(PALETTE[palette]))]
        scale = self.uniform(0.85, 1.1)[:, None]
        tint = np.stack([self.uniform(-0.05, 0.05) for _ in range(3)], -1)
        return np.clip(base * scale + tint, 0.0, 1.0)


class Scene:
    """Writes shapes and styles of the ``rows`` of ``tables`` (one class's images)."""

    def __init__(self, tables: R.SlotTables, rows: np.ndarray, u: np.ndarray):
        self.t, self.rows, self.d = tables, rows, Draw(u)
        self.n = rows.size

    def _where(self, where) -> np.ndarray:
        w = np.ones(self.n, bool) if where is None else np.broadcast_to(where, (self.n,))
        return self.rows[w], w

    def shape(self, slot: str, geom, where=None):
        r, w = self._where(where)
        g = np.stack([np.broadcast_to(np.asarray(v, np.float64), (self.n,)) for v in geom], -1)
        self.t.geom[r, R.SLOT_ID[slot], :g.shape[1]] = g[w]
        self.t.geom[r, R.SLOT_ID[slot], g.shape[1]:] = 0.0

    def style(self, slot: str, obj: str, palette: str, part: str | None = None,
              mat=None, tex: int = R.NOISE, amp: float = 0.05, grad: float = 0.0,
              where=None, color=None):
        """``mat`` is a material name or ``[n]`` array of label ids."""
        r, w = self._where(where)
        s = R.SLOT_ID[slot]
        col = self.d.color(palette) if color is None else color
        self.t.obj[r, s] = label_id(obj)
        self.t.part[r, s] = label_id(part) if part else 0
        if isinstance(mat, str):
            mat = label_id(mat)
        self.t.mat[r, s] = np.broadcast_to(0 if mat is None else mat, (self.n,))[w]
        self.t.tex[r, s] = np.broadcast_to(tex, (self.n,))[w]
        self.t.color[r, s] = col[w]
        self.t.tex_amp[r, s] = np.broadcast_to(amp * self.d.uniform(0.7, 1.3), (self.n,))[w]
        self.t.grad[r, s] = grad

    def rect(self, slot, y0, y1, cx, half_w, where=None):
        self.shape(slot, (y0, y1, cx, half_w, 0.0), where)

    def band(self, slot, top, bottom, wave=0.02, where=None):
        d = self.d
        geom = []
        for edge in (top, bottom):
            geom += [edge, d.uniform(0, wave), d.uniform(0.5, 2.5), d.uniform(0, 2 * np.pi)]
        self.shape(slot, geom, where)

    # ---- composite things -------------------------------------------------
    def sky(self, horizon):
        self.band("base", -1.0, 2.0, 0.0)
        self.band("sky", -1.0, horizon, 0.0)
        self.style("sky", "sky", "sky", tex=R.NOISE, amp=0.02,
                   grad=self.d.uniform(0.1, 0.45))

    def sun(self, p):
        d, where = self.d, self.d.coin(p)
        r = d.uniform(0.05, 0.09)
        self.shape("sun", (d.uniform(0.08, 0.22), d.uniform(0.1, 0.9), r, r), where)
        self.style("sun", "sun", "sun", tex=R.FLAT, where=where)

    def clouds(self, p, horizon):
        d = self.d
        for i in range(2):
            where = d.coin(p)
            cy, cx = d.uniform(0.06, 0.8 * horizon), d.uniform(0.05, 0.95)
            w, h = d.uniform(0.08, 0.16), d.uniform(0.03, 0.06)
            col = d.color("cloud")
            for j, dx in zip("abc", (-1.0, 0.0, 1.0)):
                self.shape(f"cloud{i}{j}", (cy - (dx == 0) * h * 0.5, cx + dx * w * 0.6,
                                            h * (1.0 + (dx == 0) * 0.4), w * 0.7), where)
                self.style(f"cloud{i}{j}", "cloud", "cloud", tex=R.BLOTCH, amp=0.04,
                           where=where, color=col)

    def mountains(self, p, horizon, snow_p=0.0, palette="mountain"):
        d = self.d
        for i in range(2):
            where = d.coin(p)
            top = horizon - d.uniform(0.12, 0.3)
            k = d.uniform(0.9, 2.2)
            cx = d.uniform(0.1, 0.9)
            ridge = (top, horizon + 0.01, cx, 0.0, k, d.uniform(0.0, 0.03), d.uniform(20, 60),
                     d.uniform(0, 6.3))
            self.shape(f"mountain{i}", ridge, where)
            self.style(f"mountain{i}", "mountain", palette, mat="rock", tex=R.BLOTCH,
                       amp=0.12, grad=-0.3, where=where)
            capped = where & d.coin(snow_p)
            cap = (top, top + (horizon - top) * d.uniform(0.25, 0.5)) + ridge[2:]
            self.shape(f"cap{i}", cap, capped)
            self.style(f"cap{i}", "snow", "snow", tex=R.NOISE, amp=0.04, where=capped)

    def tree(self, i, where, cx, ground, scale, pine=False):
        d = self.d
        th, tw = scale * d.uniform(0.2, 0.35), scale * d.uniform(0.025, 0.045)
        self.rect(f"tree{i}_trunk", ground - th, ground, cx, tw, where)
        self.style(f"tree{i}_trunk", "tree", "trunk", part="trunk", mat="wood", tex=R.WOOD,
                   amp=0.12, where=where)
        ry, rx = scale * d.uniform(0.13, 0.22), scale * d.uniform(0.09, 0.16)
        if pine:
            rx = rx * 0.7
            ry = ry * 1.3
        self.shape(f"tree{i}_crown", (ground - th - ry * 0.55, cx, ry, rx), where)
        self.style(f"tree{i}_crown", "tree", "pine" if pine else "crown",
                   mat="foliage", tex=R.BLOTCH, amp=0.2, grad=-0.2, where=where)

    def trees(self, count_lo, count_hi, ground_lo, ground_hi, scale_lo, scale_hi, pine=False):
        d = self.d
        count = count_lo + d.pick(count_hi - count_lo + 1)
        for i in range(4):
            where = count > i
            g = d.uniform(ground_lo, ground_hi)
            self.tree(i, where, d.uniform(0.05, 0.95), g, d.uniform(scale_lo, scale_hi), pine)

    def house(self, i, where, cx, base, scale):
        """A house standing on ``base``: brick or painted wall, roof, chimney, a door
        at the bottom of the wall and one or two windows beside it."""
        d = self.d
        hw, h = scale * d.uniform(0.13, 0.2), scale * d.uniform(0.18, 0.28)
        rh = scale * d.uniform(0.08, 0.15)
        top = base - h
        brick = d.coin(0.5)
        self.rect(f"house{i}_wall", top, base, cx, hw, where)
        wall_col = np.where(brick[:, None], d.color("brick"), d.color("painted"))
        self.style(f"house{i}_wall", "house", "brick", mat=np.where(
            brick, label_id("brick"), label_id("painted")), tex=np.where(
            brick, R.BRICK, R.NOISE), amp=0.15, where=where, color=wall_col)
        over = hw * d.uniform(1.05, 1.2)
        self.shape(f"house{i}_roof", (top - rh, top, cx, 0.0, over / rh), where)
        self.style(f"house{i}_roof", "house", "roof", part="roof", mat="tile", tex=R.TILE,
                   amp=0.15, where=where)
        chim = where & d.coin(0.6)
        side = np.where(d.coin(0.5), 1.0, -1.0)
        self.rect(f"house{i}_chimney", top - rh * d.uniform(0.9, 1.2), top - rh * 0.3,
                  cx + side * hw * 0.5, scale * d.uniform(0.02, 0.035), chim)
        self.style(f"house{i}_chimney", "house", "brick", part="chimney", mat="brick",
                   tex=R.BRICK, amp=0.15, where=chim)
        # door on one half of the wall, windows on the other (or above both halves)
        dside = np.where(d.coin(0.5), 1.0, -1.0)
        dw, dh = hw * d.uniform(0.22, 0.32), h * d.uniform(0.45, 0.6)
        dcx = cx + dside * hw * d.uniform(0.0, 0.45)
        self.rect(f"house{i}_door", base - dh, base, dcx, dw, where)
        self.style(f"house{i}_door", "door", "door", mat="wood", tex=R.WOOD, amp=0.12,
                   where=where)
        nwin = 1 + d.coin(0.6)
        # windows stay in the top 42% of the wall, above any door
        ws = np.minimum(hw * d.uniform(0.22, 0.3), h * 0.15)
        wcy = top + h * d.uniform(0.1, 0.12) + ws
        fcol, fmat = d.color("frame"), d.coin(0.5)
        gcol = d.color("glass")
        for w in range(2):
            has = where & (nwin > w)
            # window w sits on the side away from the door, second one higher up
            wcx = cx - dside * hw * (0.5 if w == 0 else 0.0) + (w == 1) * dside * hw * 0.5
            frame = np.maximum(ws * 0.2, 0.017)
            self.rect(f"house{i}_win{w}", wcy - ws, wcy + ws, wcx, ws, has)
            self.style(f"house{i}_win{w}", "window", "frame",
                       mat=np.where(fmat, label_id("wood"), label_id("painted")),
                       tex=R.FLAT, amp=0.0, where=has, color=fcol)
            self.rect(f"house{i}_pane{w}", wcy - ws + frame, wcy + ws - frame, wcx, ws - frame,
                      has)
            self.style(f"house{i}_pane{w}", "window", "glass", part="pane", mat="glass",
                       tex=R.GLASS, amp=0.12, where=has, color=gcol)
        return top - rh

    def car(self, i, where, cx, ground, scale, facing):
        d = self.d
        hw, bh = scale * d.uniform(0.11, 0.15), scale * d.uniform(0.045, 0.07)
        wr = scale * d.uniform(0.025, 0.035)
        btop = ground - wr - bh
        self.rect(f"car{i}_body", btop, ground - wr * 0.6, cx, hw, where)
        col = d.color("car")
        self.style(f"car{i}_body", "car", "car", mat="metal", tex=R.NOISE, amp=0.05,
                   grad=-0.4, where=where, color=col)
        ch = scale * d.uniform(0.04, 0.06)
        ccx = cx - facing * hw * 0.15
        self.shape(f"car{i}_cabin", (btop - ch, btop + 0.002, ccx, hw * 0.45, hw * 0.25 / ch),
                   where)
        self.style(f"car{i}_cabin", "car", "car", mat="metal", tex=R.NOISE, amp=0.05,
                   where=where, color=col)
        inset = np.maximum(ch * 0.2, 0.016)
        self.shape(f"car{i}_glass", (btop - ch + inset, btop, ccx, hw * 0.45 - inset * 0.5,
                                     hw * 0.25 / ch), where)
        self.style(f"car{i}_glass", "car", "glass", part="windshield", mat="glass",
                   tex=R.GLASS, amp=0.12, where=where)
        tyre = d.color("tyre")
        for j, side in enumerate((-1.0, 1.0)):
            self.shape(f"car{i}_wheel{j}", (ground - wr, cx + side * hw * 0.62, wr, wr), where)
            self.style(f"car{i}_wheel{j}", "car", "tyre", part="wheel", tex=R.FLAT,
                       where=where, color=tyre)

    def boat(self, i, where, cx, waterline, scale):
        d = self.d
        hw, hh = scale * d.uniform(0.07, 0.12), scale * d.uniform(0.03, 0.05)
        self.shape(f"boat{i}_hull", (waterline - hh, waterline, cx, hw, -0.5), where)
        self.style(f"boat{i}_hull", "boat", "hull", mat="wood", tex=R.WOOD, amp=0.1,
                   where=where)
        sh = scale * d.uniform(0.1, 0.16)
        self.shape(f"boat{i}_sail", (waterline - hh - sh, waterline - hh, cx, 0.0,
                                     hw * 0.8 / sh), where)
        self.style(f"boat{i}_sail", "boat", "sail", part="sail", mat="fabric", tex=R.WEAVE,
                   amp=0.05, where=where)

    def ground(self, slot, obj, palette, top, bottom, tex=R.NOISE, amp=0.08, mat=None,
               wave=0.02, where=None):
        self.band(slot, top, bottom, wave, where)
        self.style(slot, obj, palette, mat=mat, tex=tex, amp=amp, grad=0.15, where=where)


# ---- scene classes --------------------------------------------------------------

def _beach(s: Scene):
    d = s.d
    h = d.uniform(0.3, 0.5)
    s.sky(h)
    s.style("base", "sand", "sand", tex=R.NOISE, amp=0.08)
    shore = h + d.uniform(0.15, 0.3)
    s.ground("water", "water", "water", h, shore, tex=R.WAVES, amp=0.1, wave=0.03)
    s.sun(0.5)
    s.clouds(0.5, h)
    s.boat(0, d.coin(0.4), d.uniform(0.15, 0.85), h + (shore - h) * d.uniform(0.3, 0.8),
           d.uniform(0.6, 1.0))
    s.tree(0, d.coin(0.25), d.uniform(0.05, 0.95), d.uniform(shore + 0.1, 0.95),
           d.uniform(0.8, 1.2))


def _desert(s: Scene):
    d = s.d
    h = d.uniform(0.35, 0.55)
    s.sky(h)
    s.style("base", "sand", "sand", tex=R.NOISE, amp=0.1)
    s.mountains(0.7, h, 0.0)
    s.ground("far", "sand", "sand", h, h + d.uniform(0.05, 0.2), wave=0.04)
    s.sun(0.7)
    s.clouds(0.15, h)


def _forest(s: Scene):
    d = s.d
    h = d.uniform(0.25, 0.45)
    s.sky(h)
    s.style("base", "grass", "grass", mat="foliage", tex=R.BLOTCH, amp=0.12)
    s.mountains(0.3, h, 0.3)
    s.clouds(0.3, h)
    s.trees(3, 4, h + 0.2, 0.97, 0.9, 1.5)


def _lake(s: Scene):
    d = s.d
    h = d.uniform(0.3, 0.45)
    s.sky(h)
    s.style("base", "grass", "grass", mat="foliage", tex=R.BLOTCH, amp=0.12)
    s.mountains(0.7, h, 0.3)
    shore = h + d.uniform(0.03, 0.08)
    near = shore + d.uniform(0.2, 0.35)
    s.ground("far", "grass", "grass", h, shore, mat="foliage", tex=R.BLOTCH, amp=0.1, wave=0.01)
    s.ground("water", "water", "water", shore, near, tex=R.WAVES, amp=0.1, wave=0.03)
    s.clouds(0.4, h)
    s.boat(0, d.coin(0.4), d.uniform(0.15, 0.85), shore + (near - shore) * d.uniform(0.4, 0.9),
           d.uniform(0.5, 0.9))
    s.trees(0, 2, near + 0.12, 0.98, 0.8, 1.2)


def _ski(s: Scene):
    d = s.d
    h = d.uniform(0.35, 0.5)
    s.sky(h)
    s.style("base", "snow", "snow", tex=R.NOISE, amp=0.04, grad=0.1)
    s.mountains(1.0, h, 1.0)
    s.clouds(0.5, h)
    s.trees(1, 3, h + 0.1, 0.95, 0.6, 1.0, pine=True)
    s.house(0, d.coin(0.35), d.uniform(0.2, 0.8), d.uniform(h + 0.2, 0.9), d.uniform(0.7, 1.0))


def _farm(s: Scene):
    d = s.d
    h = d.uniform(0.3, 0.45)
    s.sky(h)
    s.style("base", "field", "field", tex=R.ROWS, amp=0.15)
    fy = h + d.uniform(0.12, 0.2)
    s.ground("far", "grass", "grass", h, fy, mat="foliage", tex=R.BLOTCH, amp=0.1, wave=0.01)
    s.sun(0.4)
    s.clouds(0.4, h)
    s.trees(0, 2, h + 0.08, fy, 0.6, 0.9)
    s.house(0, d.coin(0.85), d.uniform(0.2, 0.8), fy - 0.01, d.uniform(0.8, 1.2))
    where = d.coin(0.8)
    fb = d.uniform(fy + 0.12, 0.8)
    s.shape("fence", (fb - d.uniform(0.08, 0.12), fb, d.uniform(0.08, 0.14),
                      d.uniform(0.018, 0.03), d.uniform(0, 1), d.uniform(0.2, 0.3), 0.1), where)
    s.style("fence", "fence", "fence", mat="wood", tex=R.WOOD, amp=0.1, where=where)


def _village(s: Scene):
    d = s.d
    h = d.uniform(0.25, 0.4)
    s.sky(h)
    s.style("base", "grass", "grass", mat="foliage", tex=R.BLOTCH, amp=0.12)
    s.clouds(0.5, h)
    s.trees(1, 3, h + 0.1, h + 0.35, 0.7, 1.1)
    x0 = d.uniform(0.15, 0.35)
    s.house(0, np.ones(s.n, bool), x0, d.uniform(h + 0.3, 0.75), d.uniform(0.9, 1.3))
    s.house(1, d.coin(0.8), d.uniform(0.6, 0.85), d.uniform(0.75, 0.95), d.uniform(0.9, 1.3))


def _street(s: Scene):
    d = s.d
    h = d.uniform(0.2, 0.35)
    s.sky(h)
    s.style("base", "grass", "grass", mat="foliage", tex=R.BLOTCH, amp=0.1)
    rt = d.uniform(0.68, 0.78)
    s.ground("road", "road", "road", rt, 2.0, wave=0.0)
    s.clouds(0.4, h)
    s.trees(0, 1, h + 0.2, rt, 0.7, 1.0)
    s.house(0, np.ones(s.n, bool), d.uniform(0.15, 0.4), rt, d.uniform(1.1, 1.5))
    s.house(1, d.coin(0.8), d.uniform(0.6, 0.85), rt, d.uniform(1.1, 1.5))
    s.car(0, np.ones(s.n, bool), d.uniform(0.15, 0.5), d.uniform(rt + 0.12, 0.97),
          d.uniform(1.0, 1.4), np.where(d.coin(0.5), 1.0, -1.0))
    s.car(1, d.coin(0.5), d.uniform(0.55, 0.85), d.uniform(rt + 0.12, 0.97), d.uniform(1.0, 1.4),
          np.where(d.coin(0.5), 1.0, -1.0))


def _highway(s: Scene):
    d = s.d
    h = d.uniform(0.3, 0.45)
    s.sky(h)
    s.style("base", "grass", "grass", mat="foliage", tex=R.BLOTCH, amp=0.1)
    s.mountains(0.5, h, 0.2)
    rt = h + d.uniform(0.12, 0.25)
    s.ground("road", "road", "road", rt, d.uniform(0.85, 1.2), wave=0.0)
    s.clouds(0.4, h)
    s.trees(0, 2, h + 0.05, rt, 0.5, 0.8)
    s.car(0, np.ones(s.n, bool), d.uniform(0.15, 0.5), rt + d.uniform(0.12, 0.2),
          d.uniform(0.9, 1.3), np.where(d.coin(0.5), 1.0, -1.0))
    s.car(1, d.coin(0.7), d.uniform(0.55, 0.85), rt + d.uniform(0.2, 0.35), d.uniform(1.0, 1.5),
          np.where(d.coin(0.5), 1.0, -1.0))


def _harbor(s: Scene):
    d = s.d
    h = d.uniform(0.25, 0.4)
    s.sky(h)
    s.style("base", "water", "water", tex=R.WAVES, amp=0.1)
    quay = h + d.uniform(0.15, 0.25)
    s.ground("far", "grass", "grass", h, quay, mat="foliage", tex=R.BLOTCH, amp=0.1, wave=0.005)
    s.clouds(0.4, h)
    s.house(0, np.ones(s.n, bool), d.uniform(0.15, 0.45), quay, d.uniform(0.7, 1.0))
    s.house(1, d.coin(0.6), d.uniform(0.6, 0.85), quay, d.uniform(0.7, 1.0))
    s.boat(0, np.ones(s.n, bool), d.uniform(0.15, 0.45), d.uniform(quay + 0.2, 0.95),
           d.uniform(0.9, 1.3))
    s.boat(1, d.coin(0.5), d.uniform(0.55, 0.85), d.uniform(quay + 0.2, 0.95),
           d.uniform(0.9, 1.3))


def _bedroom(s: Scene):
    d = s.d
    fl = d.uniform(0.55, 0.72)
    s.band("base", -1.0, 2.0, 0.0)
    carpet = d.coin(0.5)
    s.style("base", "floor", "carpet", mat=np.where(carpet, label_id("carpet"), label_id("wood")),
            tex=np.where(carpet, R.WEAVE, R.WOOD), amp=0.08,
            color=np.where(carpet[:, None], d.color("carpet"), d.color("woodfloor")))
    s.band("sky", -1.0, fl, 0.0)
    s.style("sky", "wall", "wall", mat="painted", tex=R.NOISE, amp=0.03, grad=0.2)
    # window high on the wall, door standing on the floor line (slots of house 0)
    win = d.coin(0.85)
    ws = d.uniform(0.08, 0.13)
    wcx, wcy = d.uniform(0.2, 0.8), d.uniform(0.15, 0.3)
    s.rect("house0_win0", wcy - ws, wcy + ws, wcx, ws * 1.2, win)
    s.style("house0_win0", "window", "frame", mat="wood", tex=R.WOOD, amp=0.05, where=win)
    s.rect("house0_pane0", wcy - ws + 0.025, wcy + ws - 0.025, wcx, ws * 1.2 - 0.025, win)
    s.style("house0_pane0", "window", "sky", part="pane", mat="glass", tex=R.GLASS, amp=0.12,
            where=win)
    door = d.coin(0.4)
    s.rect("house0_door", fl - d.uniform(0.35, 0.45), fl + 0.005,
           np.where(wcx > 0.5, d.uniform(0.08, 0.25), d.uniform(0.75, 0.92)),
           d.uniform(0.06, 0.09), door)
    s.style("house0_door", "door", "door", mat="wood", tex=R.WOOD, amp=0.12, where=door)
    # bed on the floor, headboard at one end, pillow beside it
    bw, bcx = d.uniform(0.25, 0.38), d.uniform(0.35, 0.65)
    bb = d.uniform(fl + 0.15, 0.95)
    bh = d.uniform(0.1, 0.16)
    end = np.where(d.coin(0.5), 1.0, -1.0)
    s.rect("bed_head", bb - bh - d.uniform(0.12, 0.2), bb, bcx + end * bw, 0.03)
    s.style("bed_head", "bed", "bedwood", part="headboard", mat="wood", tex=R.WOOD, amp=0.1)
    s.rect("bed_frame", bb - bh * 0.5, bb, bcx, bw)
    s.style("bed_frame", "bed", "bedwood", mat="wood", tex=R.WOOD, amp=0.1)
    s.rect("bed_sheet", bb - bh, bb - bh * 0.45, bcx - end * 0.01, bw - 0.02)
    s.style("bed_sheet", "bed", "sheet", mat="fabric", tex=R.WEAVE, amp=0.06, grad=-0.2)
    s.shape("bed_pillow", (bb - bh - 0.02, bcx + end * (bw - 0.1), 0.035, 0.07))
    s.style("bed_pillow", "bed", "pillow", part="pillow", mat="fabric", tex=R.WEAVE, amp=0.04)
    lamp = d.coin(0.8)
    lx = np.where(end > 0, d.uniform(0.85, 0.95), d.uniform(0.05, 0.15))
    ly = d.uniform(fl + 0.05, bb)
    sh, lh = d.uniform(0.08, 0.12), d.uniform(0.25, 0.35)
    s.rect("lamp_stand", ly - lh, ly, lx, 0.012, lamp)
    s.style("lamp_stand", "lamp", "stand", mat="metal", tex=R.FLAT, where=lamp)
    s.shape("lamp_shade", (ly - lh - sh * 0.6, ly - lh + sh * 0.4, lx, 0.03, 0.4), lamp)
    s.style("lamp_shade", "lamp", "shade", part="lampshade", mat="fabric", tex=R.WEAVE,
            amp=0.05, where=lamp)


SAMPLERS = (_beach, _desert, _forest, _lake, _ski, _farm, _village, _street, _highway,
            _harbor, _bedroom)
assert len(SAMPLERS) == len(CLASS_NAMES)


def class_labels(seed: int, indices: np.ndarray) -> np.ndarray:
    """Class of each image: every block of ``len(CLASS_NAMES)`` consecutive indices
    holds each class exactly once, in a per-block random order."""
    c = len(CLASS_NAMES)
    indices = np.asarray(indices, np.int64)
    perms = {b: np.random.default_rng([seed, 1, b]).permutation(c)
             for b in np.unique(indices // c).tolist()}
    return np.array([perms[i // c][i % c] for i in indices.tolist()], np.int64)


def scene_tables(seed: int, indices: np.ndarray, size: int):
    """Slot tables, labels and pixel noise of images ``indices`` of world ``seed``.

    Returns ``(tables, labels [n], noise [n, size, size, 3] int8)``.
    """
    indices = np.asarray(indices, np.int64)
    n = indices.size
    labels = class_labels(seed, indices)
    u = np.empty((n, _COLUMNS))
    noise = np.empty((n, size, size, 3), np.int8)
    for j, i in enumerate(indices.tolist()):
        rng = np.random.default_rng([seed, 0, i])
        u[j] = rng.random(_COLUMNS)
        raw = np.frombuffer(rng.bytes(size * size * 3), np.uint8).reshape(size, size, 3)
        noise[j] = (raw >> 1).astype(np.int16) - 64
    t = R.SlotTables.empty(n)
    # image-wide numbers use the last columns; samplers use the first ones
    t.bright = 0.82 + 0.3 * u[:, -1]
    t.noise_amp = 0.01 + 0.05 * u[:, -2]
    t.offset = u[:, -6:-2] * np.array([R._BANK, R._BANK, 6.3, 6.3])
    for c, sampler in enumerate(SAMPLERS):
        rows = np.flatnonzero(labels == c)
        if rows.size:
            sampler(Scene(t, rows, u[rows, :_COLUMNS - 6]))
    return t, labels, noise
