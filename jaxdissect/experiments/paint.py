"""Painting with units: GANPaint-style semantic editing of generated images.

The paper's second application (Bau et al. 2020, "Applications"; GANPaint, Bau et
al. SIGGRAPH 2019): a concept's units, found by dissecting a generator layer (the
units labelled with the concept, ranked by IoU), are turned **on** — set to a high
level, by default each unit's 99.5% quantile from the dissection — or **off** —
set to 0 — inside a region of the image; the generator then draws the rest of the
image from the edited layer, adding or removing the object there.

A region is a mask in image coordinates ``[H, W]`` (or ``[b, H, W]``, one per
image) with values in [0, 1]. It is brought to the layer's ``[h, w]`` grid by area
averaging (each feature cell gets the fraction of its ``H/h x W/w`` block that
the region covers), and becomes the ``alpha`` of an ``Edit``
(``jaxdissect.edits``): ``x * (1 - alpha) + value * alpha`` on the chosen units.

``paint`` runs a stack of ``E`` edits on a batch of ``b`` latents as one compiled
program: the layer is computed once, and the rest of the generator (``spec.resume``
from that layer) is ``jax.vmap``-ed over the stack of edits.

A measured edit states its finding (``PaintEdit.finding``): the change in the
concept's share of the box, per latent, with a Poisson-bootstrap percentile interval
over latents (within [-1, 1]); it holds when the exact sign-flip test puts the change
in the edit's direction (below 0 "off", above "on") at one-sided p < 0.005, the
error rate of one end of a 99% interval. It applies only with ``MIN_LATENTS``
latents, a painted unit whose label is significantly the concept, and the concept
present in the box unedited ("off": something to remove) or not filling it ("on":
room to add it).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdissect.edits import Edit, set_units
from jaxdissect.experiments import results
from jaxdissect.experiments.intervene import labels_support
from jaxdissect.experiments.significance import (
    LEVEL,
    Finding,
    bootstrap_interval,
    pct,
    sign_flip_p,
)
from jaxdissect.runtime import devices as sharding
from jaxdissect.runtime import sweep

MODES = ("on", "off")
#: the fewest latents a painting finding rests on: with fewer, not even every latent
#: changing the same way reaches one-sided p < 0.005 (a sign-flip test's smallest
#: p-value is 2 ** -n)
MIN_LATENTS = 8
#: bootstrap replicates of a painting finding's interval
REPLICATES = 1000


def region_to_grid(mask, grid_hw: tuple[int, int]) -> jax.Array:
    """``[..., H, W]`` mask in [0, 1] -> ``[..., h, w]``: the mean of each
    ``H/h x W/w`` block (the fraction of the feature cell the region covers).
    ``H`` and ``W`` must be multiples of ``h`` and ``w``."""
    mask = jnp.asarray(mask, jnp.float32)
    if mask.ndim < 2:
        raise ValueError(f"region mask must be [H, W] or [b, H, W], got shape {mask.shape}")
    h, w = grid_hw
    big_h, big_w = mask.shape[-2:]
    if big_h % h or big_w % w:
        raise ValueError(f"region mask {big_h}x{big_w} does not tile the layer's {h}x{w} grid "
                         f"(the mask must have the image's size, a multiple of the grid)")
    blocks = mask.reshape(mask.shape[:-2] + (h, big_h // h, w, big_w // w))
    return blocks.mean(axis=(-3, -1))


def box_mask(image_hw: tuple[int, int], box: Sequence[float]) -> np.ndarray:
    """``[H, W]`` float32 mask that is 1 inside ``box = (y0, x0, y1, x1)`` given as
    fractions of the image (0..1); ``y1``/``x1`` exclusive, rounded to pixels."""
    big_h, big_w = image_hw
    y0, x0, y1, x1 = (float(v) for v in box)
    if not (0 <= y0 < y1 <= 1 and 0 <= x0 < x1 <= 1):
        raise ValueError(f"box (y0, x0, y1, x1) must satisfy 0 <= y0 < y1 <= 1 and "
                         f"0 <= x0 < x1 <= 1, got {tuple(box)}")
    m = np.zeros((big_h, big_w), np.float32)
    m[round(y0 * big_h):round(y1 * big_h), round(x0 * big_w):round(x1 * big_w)] = 1
    return m


def concept_units(iou: np.ndarray, label_names: Sequence[str], concept: str | int,
                  n: int = 20) -> np.ndarray:
    """The ``n`` units with the highest IoU for ``concept`` (a label name or id),
    best first; ``iou [units, labels]`` from a dissection."""
    iou = np.asarray(iou)
    names = list(label_names)
    if isinstance(concept, str):
        if concept not in names[1:]:
            raise KeyError(f"unknown concept {concept!r}; labels are {names[1:]}")
        concept = names.index(concept)
    if not 1 <= int(concept) < iou.shape[1]:
        raise KeyError(f"concept id {concept} not in [1, {iou.shape[1]})")
    if n < 1:
        raise ValueError(f"need at least one unit, got n={n}")
    return np.argsort(-iou[:, int(concept)], kind="stable")[:min(n, iou.shape[0])]


def paint_edit(units, n_units: int, region_grid, mode: str, high=None) -> Edit:
    """The ``Edit`` that turns ``units`` on or off inside ``region_grid``.

    ``region_grid [h, w]`` or ``[b, h, w]`` (from ``region_to_grid``); ``mode`` "on"
    sets the units to ``high`` (``[n_units]`` per-unit levels, e.g. the dissection's
    99.5% quantiles, or ``[len(units)]``), "off" sets them to 0. The edit's arrays
    have rank 4: ``alpha [1 or b, h, w, n_units]``, ``value [1, 1, 1, n_units]``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    units = np.asarray(units, np.int64)
    if units.ndim != 1 or units.size == 0:
        raise ValueError("units must be a non-empty list of unit indices")
    if units.min() < 0 or units.max() >= n_units:
        raise ValueError(f"units must lie in [0, {n_units}), got {units.tolist()}")
    region_grid = jnp.asarray(region_grid, jnp.float32)
    if region_grid.ndim not in (2, 3):
        raise ValueError(f"region grid must be [h, w] or [b, h, w], got {region_grid.shape}")
    if mode == "on":
        if high is None:
            raise ValueError("mode 'on' needs the units' high levels (e.g. 99.5% quantiles)")
        high = np.asarray(high, np.float32)
        values = high[units] if high.shape == (n_units,) else high
        if values.shape != units.shape:
            raise ValueError(f"high levels must be [{n_units}] or [{units.size}], got "
                             f"{high.shape}")
    else:
        values = np.zeros(units.shape, np.float32)
    e = set_units(units, values, n_units)       # per-unit alpha [u] and value [u]
    grid = region_grid if region_grid.ndim == 3 else region_grid[None]
    alpha = grid[..., None] * e.alpha.reshape(1, 1, 1, n_units)
    return Edit(alpha, e.value.reshape(1, 1, 1, n_units))


def stack_edits(edits: Sequence[Edit]) -> Edit:
    """Edits of rank 4 -> one ``Edit`` with a leading stack axis ``[E, ...]`` (a
    per-image region and a shared one broadcast to the batch of the larger)."""
    if not edits:
        raise ValueError("no edits to stack")
    n = max(e.alpha.shape[0] for e in edits)
    alphas = [jnp.broadcast_to(e.alpha, (n,) + e.alpha.shape[1:]) for e in edits]
    return Edit(jnp.stack(alphas), jnp.stack([e.value for e in edits]))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _paint(spec, params, layer, z, alpha, value):
    acts = spec.activations(params, z, layer)

    def one(a, v):
        return spec.resume(params, layer, acts, edits={layer: Edit(a, v)})

    return acts, jax.vmap(one)(alpha, value)


def paint(spec, params, z, layer: str, edits: Edit) -> tuple[jax.Array, jax.Array]:
    """Generator outputs for every edit of a stack on every latent.

    ``spec`` a generator's :class:`~jaxdissect.spec.ModelSpec`; ``z [b, z_dim]``;
    ``edits`` a stacked ``Edit`` (``stack_edits``) with ``alpha [E, 1 or b, h, w, u]``
    and ``value [E, 1, 1, 1, u]``. Returns ``(acts [b, h, w, u]`` the unedited layer,
    ``out [E, b, ...]`` the generator's raw outputs, e.g. ProGAN's images in [-1, 1]).
    One compile per (spec, layer, shapes).
    """
    spec.check_layer(layer)
    z = jnp.asarray(z, jnp.float32)
    acts_shape = jax.eval_shape(lambda p, zz: spec.activations(p, zz, layer), params, z).shape
    a = edits.alpha
    if a.ndim != 5 or a.shape[2:] != acts_shape[1:] or a.shape[1] not in (1, acts_shape[0]):
        raise ValueError(f"edit alpha must be [E, 1 or {acts_shape[0]}, {acts_shape[1]}, "
                         f"{acts_shape[2]}, {acts_shape[3]}] for layer {layer!r}, got "
                         f"{tuple(a.shape)}")
    if edits.value.shape != (a.shape[0], 1, 1, 1, acts_shape[3]):
        raise ValueError(f"edit value must be [E, 1, 1, 1, {acts_shape[3]}], got "
                         f"{tuple(edits.value.shape)}")
    return _paint(spec, params, layer, z, edits.alpha, edits.value)


def region_pixels(seg: jax.Array, label: int, region) -> jax.Array:
    """``[b]``: pixels of ``region`` (``[Hs, Ws]`` mask > 0.5 at the segmentation's
    size) having ``label`` in any layer of ``seg [b, K, Hs, Ws]``."""
    region = jnp.asarray(region) > 0.5
    if region.shape != seg.shape[2:]:
        raise ValueError(f"region {region.shape} and segmentation {seg.shape[2:]} differ")
    has = jnp.any(seg == label, axis=1)
    return jnp.sum(has & region[None], axis=(1, 2))


# ---------------------------------------------------------------- the typed result

def bootstrap_weights(n: int, seed: int = 0) -> np.ndarray:
    """``[n, REPLICATES]`` float64 Poisson(1) weights of ``n`` latents, drawn in NumPy
    row after row from ``seed``, so latent i's row does not depend on ``n`` (a few
    latents measured on the host need no compiled draw)."""
    return np.random.default_rng(seed).poisson(1.0, (n, REPLICATES)).astype(np.float64)


@results.typed
@dataclasses.dataclass(frozen=True, eq=False)
class PaintEdit:
    """One painted edit: ``concept``'s ``units [n]`` (best IoU first, ``unit_iou
    [n]``) set to ``values [n]`` ("on") or 0 ("off") inside ``box`` (y0, x0, y1,
    x1 as fractions of the image); when a segmenter measured it, the concept's
    pixels inside the box (``region_pixels`` of them) per latent ``before [z]`` and
    ``after [z]`` the edit, by ``segmenter``."""

    concept: str
    mode: str
    box: tuple
    units: np.ndarray
    unit_iou: np.ndarray
    values: np.ndarray
    segmenter: str | None = None
    region_pixels: int = 0
    before: np.ndarray | None = None
    after: np.ndarray | None = None
    #: ``[n]`` whether each unit's label is significantly the concept (None: the
    #: labels were not tested)
    significant: np.ndarray | None = None

    def shares(self) -> tuple[np.ndarray, np.ndarray]:
        """``(before [z], after [z])``: the concept's share of the box per latent."""
        region = max(int(self.region_pixels), 1)
        return (np.asarray(self.before, np.float64) / region,
                np.asarray(self.after, np.float64) / region)

    def replicates(self, values) -> np.ndarray:
        """``[REPLICATES]`` Poisson-bootstrap means of per-latent ``values [z]``: latent
        i's weights are row i of ``bootstrap_weights`` (the same at any number of
        latents)."""
        w = bootstrap_weights(len(values))
        total = w.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, w.T @ np.asarray(values, np.float64) / total, np.nan)

    def applicability(self) -> str:
        """Why the painting finding means nothing here ("" when it does)."""
        n, k = len(self.before), len(self.units)
        if n < MIN_LATENTS:
            return (f"{n} latents measured, fewer than {MIN_LATENTS}: with so few, not even "
                    f"every latent changing the same way would reach one-sided p < 0.005 "
                    f"(a sign-flip test's smallest p-value is 2^-{n})")
        unsupported = labels_support(self.significant, k, self.concept, "painted")
        if unsupported:
            return unsupported
        before, _ = self.shares()
        lo, hi = bootstrap_interval(self.replicates(before), LEVEL)
        share = (f"its share of the box unedited is {before.mean():.2%} (99% interval "
                 f"{pct(lo)} to {pct(hi)}, {n} latents)")
        if self.mode == "off" and not lo > 0:
            return f"{self.concept} is not present in the box, so nothing can be removed: {share}"
        if self.mode == "on" and not hi < 1:
            return f"{self.concept} already fills the box, so nothing can be added: {share}"
        return ""

    def finding(self) -> Finding | None:
        """Turning units off removes the concept from the box, on adds it: the change
        in the concept's share of the box, its 99% bootstrap interval over latents
        (within [-1, 1]), and the exact sign-flip test of its direction (holds at
        one-sided p < 0.005). None when no segmenter measured the edit; not
        applicable unless ``applicability`` is satisfied."""
        if self.before is None:
            return None
        off = self.mode == "off"
        word = "removes" if off else "adds"
        box = [float(v) for v in self.box]
        bounds, n = (-1.0, 1.0), len(self.before)
        supported = "" if self.significant is None else \
            f" ({int(np.sum(self.significant))} of them significantly labelled {self.concept})"
        what = (f"Turning {len(self.units)} <b>{self.concept}</b> units{supported} {self.mode} "
                f"in the box {box} {word} {self.concept} there. Paper (GANPaint): units "
                f"switched off remove their object, switched on add it.")
        why = self.applicability()
        if why:
            return Finding.not_applicable(what, why, samples=n, criterion=0.0, bounds=bounds)
        before, after = self.shares()
        change = after - before
        lo, hi = bootstrap_interval(self.replicates(change), LEVEL)
        p = sign_flip_p(change, "less" if off else "greater")
        holds = bool(p < (1 - LEVEL) / 2)
        text = (f"Turning {len(self.units)} <b>{self.concept}</b> units{supported} "
                f"{self.mode} in the box {box} {word} {self.concept}: its share of the box "
                f"({self.region_pixels} pixels) goes from {before.mean():.1%} to "
                f"{after.mean():.1%} per image, a change of {100 * change.mean():+.1f} points "
                f"(99% CI {100 * lo:+.1f} to {100 * hi:+.1f}, bootstrap over {n} latents; "
                f"sign-flip p = {p:.2g}); criterion: the change "
                f"{'below' if off else 'above'} 0 at one-sided p < 0.005.")
        return Finding(text, holds, float(change.mean()), lo, hi, 0.0, n, p_value=p,
                       bounds=bounds)

    def to_json(self) -> dict:
        out = {"concept": self.concept, "mode": self.mode, "box": list(self.box),
               "units": self.units.tolist(), "unit_iou": self.unit_iou.tolist(),
               "values": self.values.tolist()}
        if self.before is not None:
            b, a = float(np.mean(self.before)), float(np.mean(self.after))
            out["measured"] = {
                "segmenter": self.segmenter, "region_pixels": self.region_pixels,
                "before": self.before.tolist(), "after": self.after.tolist(),
                "before_mean": b, "after_mean": a,
                "relative_change": (a - b) / b if b > 0 else None}
        if self.significant is not None:
            out["significant"] = np.asarray(self.significant, bool).tolist()
        return out


@results.typed
@dataclasses.dataclass(frozen=True, eq=False)
class PaintResult(results.Saved):
    """Edits painted on ``num_z`` latents (seed ``z_seed``) at ``layer``, their units
    from a dissection of ``dissection_samples`` samples."""

    model: str
    layer: str
    z_seed: int
    num_z: int
    dissection_samples: int
    edits: tuple

    def findings(self) -> list[Finding]:
        return [f for f in (e.finding() for e in self.edits) if f is not None]

    def to_json(self) -> dict:
        return {"model": self.model, "layer": self.layer, "z_seed": self.z_seed,
                "num_z": self.num_z, "dissection_samples": self.dissection_samples,
                "edits": [e.to_json() for e in self.edits],
                "findings": [f.to_json() for f in self.findings()]}



# ---------------------------------------------------------------- painting a source

@struct.dataclass
class Gathered:
    """Per-example rows ``[N, ...]`` (any pytree of them) gathered from a sweep: each
    valid example's row is added at its global index, so devices and processes
    fill disjoint rows and ``merge`` (addition) is exact."""

    rows: Any

    @classmethod
    def empty(cls, shapes) -> "Gathered":
        """``shapes``: a pytree of ``jax.ShapeDtypeStruct`` ``[N, ...]``."""
        return cls(jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))

    def update(self, rows, index, valid, axis: int = 0) -> "Gathered":
        """Adds ``rows`` (``[b, ...]`` along ``axis``) at ``index [b]`` where ``valid``."""
        def put(buf, r):
            mask = valid.reshape((1,) * axis + (-1,) + (1,) * (r.ndim - axis - 1))
            r = jnp.where(mask, r, jnp.zeros((), r.dtype))
            return buf.at[(slice(None),) * axis + (index,)].add(r)
        return Gathered(jax.tree_util.tree_map(put, self.rows, rows))

    def merge(self, other: "Gathered") -> "Gathered":
        return Gathered(jax.tree_util.tree_map(jnp.add, self.rows, other.rows))


def paint_source(split, source, edits: Edit, *, batch_size: int = 16, chunk: int = 8,
                 segment=None, labels=None, regions=None, progress: bool = False,
                 devices=None) -> dict:
    """Paints every edit of a stack on every example of ``source`` (e.g. a ``ZSource``)
    in one ``runtime.sweep``: per batch the layer once (``split.head``), then the
    stack through ``split.tail`` inside the step (``lax.map``, ``chunk`` at a time).

    ``edits``: a stacked ``Edit`` (``stack_edits``), alpha ``[E, 1 or N, h, w, u]``
    (per-example regions are indexed by the examples' global indices). With
    ``segment`` (images -> ``[b, K, Hs, Ws]``), ``labels [E]`` and ``regions [E, Hs,
    Ws]``, also counts each edit's label pixels inside its region before and after.
    Returns ``{"images": [E, N, ...], "base": [N, ...]}`` (``split.tail``'s outputs,
    edited and unedited) plus ``"before"``, ``"after"`` ``[E, N]`` int32 when measured.
    """
    n = source.num_examples
    probe = sweep.first_batch(source, batch_size, devices)
    acts = jax.eval_shape(split.head, split.params, probe)
    a = edits.alpha
    if a.ndim != 5 or a.shape[2:] != acts.shape[1:] or a.shape[1] not in (1, n):
        raise ValueError(f"edit alpha must be [E, 1 or {n}, {acts.shape[1]}, {acts.shape[2]}, "
                         f"{acts.shape[3]}], got {tuple(a.shape)}")
    measure = segment is not None
    labels = jnp.asarray(np.zeros(a.shape[0]) if labels is None else labels, jnp.int32)
    regions = jnp.asarray(np.zeros((a.shape[0], 1, 1)) if regions is None else regions) > 0.5

    def step(stat, batch, params, alpha, value, labels, regions):
        acts = split.head(params, batch)
        index = batch["index"]
        alpha = alpha if alpha.shape[1] == 1 else alpha[:, index]
        zero = jnp.zeros((1, 1, 1, acts.shape[-1]), acts.dtype)
        base = split.tail(params, acts, Edit(zero, zero))
        seg0 = segment(base) if measure else None

        def one(args):
            a, v, label, region = args
            out = split.tail(params, acts, Edit(a, v))
            if not measure:
                return out, ()
            return out, (region_pixels(seg0, label, region), region_pixels(segment(out),
                                                                            label, region))

        images, counts = jax.lax.map(one, (alpha, value, labels, regions), batch_size=chunk)
        rows = {"images": images, "base": base}
        if measure:
            rows.update(before=counts[0].astype(jnp.int32), after=counts[1].astype(jnp.int32))
        s = stat.parts
        new = [s[0].update({"base": rows.pop("base")}, index, batch["valid"]),
               s[1].update(rows, index, batch["valid"], axis=1)]
        return sharding.Joint(tuple(new))

    base_shape = jax.eval_shape(lambda p, b: split.tail(p, split.head(p, b), Edit(
        jnp.zeros((1, 1, 1, acts.shape[-1])), jnp.zeros((1, 1, 1, acts.shape[-1])))),
        split.params, probe)
    e = a.shape[0]
    stacked = {"images": jax.ShapeDtypeStruct((e, n) + base_shape.shape[1:], base_shape.dtype)}
    if measure:
        stacked.update(before=jax.ShapeDtypeStruct((e, n), jnp.int32),
                       after=jax.ShapeDtypeStruct((e, n), jnp.int32))
    empty = sharding.Joint((
        Gathered.empty({"base": jax.ShapeDtypeStruct((n,) + base_shape.shape[1:],
                                                     base_shape.dtype)}),
        Gathered.empty(stacked)))
    stat = sweep.sweep(step, empty, source, batch_size=batch_size,
                       replicated=(split.params, edits.alpha, edits.value, labels, regions),
                       name="paint", progress=progress, devices=devices)
    out = {k: np.asarray(v) for k, v in stat.parts[1].rows.items()}
    out["base"] = np.asarray(stat.parts[0].rows["base"])
    return out
