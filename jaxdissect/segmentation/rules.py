"""The reference's multi-label rules: from class scores to ``[b, K, H, W]`` label maps.

Unified parsing (reference ``UnifiedParsingSegmenter``), label numbering::

    0 | objects 1..N | (quad: N*4 divided objects "-t", "-l", "-b", "-r") |
      materials | parts

with ``mult = 5`` if the quadrant split is on, else 1: material ``m >= 1`` is
label ``m + N*mult``; parts are numbered from ``N*mult + M`` (``M`` = number of
materials, counting "-") in order of first appearance over the part lists of
the objects that have parts, except that a part whose name is also an object
("door" of a building) takes that object's label. Channels: ``[object, material,
part]`` and, with the quadrant split, two more.

* object, material: argmax of the summed class scores (material 0 stays 0);
* part: only where the object channel shows the owning object, the argmax of
  that object's part scores, translated to the shared numbering; elsewhere 0.

Quadrant split (reference ``expand_segment_quad``): every 8-connected region of
equal object label is cut at the middle of its bounding box (``vmid = (top +
bottom + 1) // 2``, ``hmid`` likewise): channel 3 holds ``obj-t`` above ``vmid``
and ``obj-b`` from it on, channel 4 ``obj-l`` left of ``hmid`` and ``obj-r`` from it
on. The reference iterates regions ``1 .. num - 1`` of ``skimage.morphology.label``
(numbered in raster order of their first pixel), so the region met last in
raster order is never split and is set to 0; ``drop_last_region=True`` keeps that.

Semantic segmenters (reference ``SemanticSegmenter``): one channel per category;
argmax within the category's channels, mapped to external label numbers
(internal labels to 0); a category with a ``mask`` label is zeroed wherever the
mask label is not its own category's argmax.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.labels import LabelSet
from jaxdissect.segmentation.labeldata import SemanticLabelData, UnifiedLabelData

QUAD_SUFFIXES = ("t", "l", "b", "r")
DEFAULT_PART_OBJECTS = ("sky", "building", "person")


@dataclasses.dataclass(frozen=True)
class PartGroup:
    """Parts of one object: decoder channels ``start:stop``, their shared label numbers."""

    object_label: int
    start: int
    stop: int
    numbers: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class UnifiedPlan:
    """Static numbering of the unified-parsing segmenter's output."""

    labels: LabelSet
    categories: tuple[str, ...]
    num_objects: int  # N, object labels excluding "-"
    material_offset: int  # N * mult
    part_groups: tuple[PartGroup, ...]
    quad: bool

    @property
    def num_layers(self) -> int:
        return 5 if self.quad else 3


def unified_plan(data: UnifiedLabelData, all_parts: bool = True, quad: bool = False) -> UnifiedPlan:
    """Numbering and part groups, as the reference's ``UnifiedParsingSegmenter.__init__``."""
    n_obj = len(data.object) - 1
    mult = 5 if quad else 1
    owners = [o for o, _ in data.object_part] if all_parts else list(DEFAULT_PART_OBJECTS)
    parts_of = dict(data.object_part)
    missing = [o for o in owners if o not in parts_of]
    if missing:
        raise ValueError(f"labels name no parts for objects {missing}")
    blocks = {obj: (start, stop) for obj, start, stop in data.part_blocks}
    first_part = n_obj * mult + 1 + (len(data.material) - 1)
    object_number = {name: i for i, name in enumerate(data.object)}
    part_number: dict[str, int] = {}
    part_names: list[str] = []
    groups = []
    for owner in owners:
        numbers = []
        for part in parts_of[owner]:
            if part in object_number:
                numbers.append(object_number[part])
            else:
                if part not in part_number:
                    part_number[part] = first_part + len(part_names)
                    part_names.append(part)
                numbers.append(part_number[part])
        start, stop = blocks[owner]
        groups.append(PartGroup(object_number[owner], start, stop, tuple(numbers)))
    pairs = [(name, "object") for name in data.object[1:]]
    if quad:
        pairs += [(f"{name}-{s}", "part") for s in QUAD_SUFFIXES for name in data.object[1:]]
    pairs += [(name, "material") for name in data.material[1:]]
    pairs += [(name, "part") for name in part_names]
    return UnifiedPlan(labels=LabelSet.from_pairs(pairs), categories=("object", "part", "material"),
                       num_objects=n_obj, material_offset=n_obj * mult,
                       part_groups=tuple(groups), quad=quad)


def unified_labels(plan: UnifiedPlan, obj_scores, mat_scores, part_scores,
                   drop_last_region: bool = True) -> jnp.ndarray:
    """Scores ``[b, H, W, n]`` (summed softmaxes; parts: all decoder part channels,
    softmaxed per group) -> ``[b, 3 or 5, H, W]`` int32 labels."""
    obj = jnp.argmax(obj_scores, axis=-1).astype(jnp.int32)
    mat = jnp.argmax(mat_scores, axis=-1).astype(jnp.int32)
    mat = jnp.where(mat == 0, 0, mat + plan.material_offset)
    part = jnp.zeros_like(obj)
    for g in plan.part_groups:
        local = jnp.argmax(part_scores[..., g.start:g.stop], axis=-1)
        translated = jnp.asarray(np.asarray(g.numbers, np.int32))[local]
        part = jnp.where(obj == g.object_label, translated, part)
    layers = [obj, mat, part]
    if plan.quad:
        layers += list(jnp.moveaxis(quad_split(obj, plan.num_objects, drop_last_region), 1, 0))
    return jnp.stack(layers, axis=1)


def _region_roots(seg: jnp.ndarray) -> jnp.ndarray:
    """``[H, W]`` labels -> per pixel the raster index of the first pixel of its
    8-connected region of equal nonzero label; ``H*W`` on label 0."""
    h, w = seg.shape
    big = h * w
    fg = seg > 0
    idx = jnp.arange(big, dtype=jnp.int32).reshape(h, w)
    pseg = jnp.pad(seg, 1, constant_values=0)

    def neighbour_min(lab):
        plab = jnp.pad(lab, 1, constant_values=big)
        m = lab
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    nl = plab[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                    ns = pseg[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                    m = jnp.minimum(m, jnp.where(ns == seg, nl, big))
        return jnp.where(fg, m, big)

    def jump(lab):
        flat = lab.reshape(-1)
        hop = jnp.concatenate([flat, jnp.array([big], jnp.int32)])[flat]
        return hop.reshape(h, w)

    def body(state):
        lab, _ = state
        new = jump(jump(neighbour_min(lab)))
        return new, jnp.any(new != lab)

    lab, _ = jax.lax.while_loop(lambda s: s[1], body,
                                (jnp.where(fg, idx, big), jnp.array(True)))
    return lab


def _quad_one(seg: jnp.ndarray, n: int, drop_last_region: bool) -> jnp.ndarray:
    h, w = seg.shape
    big = h * w
    root = _region_roots(seg)
    fg = root < big
    rows = jnp.broadcast_to(jnp.arange(h, dtype=jnp.int32)[:, None], (h, w))
    cols = jnp.broadcast_to(jnp.arange(w, dtype=jnp.int32)[None, :], (h, w))
    ids, segs_n = root.reshape(-1), big + 1
    top = jax.ops.segment_min(rows.reshape(-1), ids, segs_n)[root]
    bottom = jax.ops.segment_max(rows.reshape(-1), ids, segs_n)[root]
    left = jax.ops.segment_min(cols.reshape(-1), ids, segs_n)[root]
    right = jax.ops.segment_max(cols.reshape(-1), ids, segs_n)[root]
    vmid = (top + bottom + 1) // 2
    hmid = (left + right + 1) // 2
    tb = jnp.where(rows < vmid, seg + n, seg + 3 * n)
    lr = jnp.where(cols < hmid, seg + 2 * n, seg + 4 * n)
    keep = fg
    if drop_last_region:
        keep = keep & (root != jnp.max(jnp.where(fg, root, -1)))
    return jnp.stack([jnp.where(keep, tb, 0), jnp.where(keep, lr, 0)])


def quad_split(obj: jnp.ndarray, num_objects: int, drop_last_region: bool = True) -> jnp.ndarray:
    """Object labels ``[b, H, W]`` -> ``[b, 2, H, W]``: (top/bottom, left/right) labels."""
    return jax.vmap(lambda s: _quad_one(s, num_objects, drop_last_region))(obj.astype(jnp.int32))


@dataclasses.dataclass(frozen=True)
class SemanticPlan:
    """Static numbering of a semantic segmenter's output (one layer per category)."""

    labels: LabelSet
    categories: tuple[str, ...]
    channels: tuple[tuple[int, ...], ...]  # per category, its channels
    external: tuple[tuple[int, ...], ...]  # per category, label number of each channel
    masks: tuple[tuple[int, int] | None, ...]  # per category: (category index, local index)

    @property
    def num_layers(self) -> int:
        return len(self.categories)


def semantic_plan(data: SemanticLabelData) -> SemanticPlan:
    """Numbering as the reference's ``SemanticSegmenter.__init__`` (no quadrant split)."""
    number = {"-": 0}
    pairs = []
    for name, cat, internal in data.labels:
        if internal or name in number:
            continue
        number[name] = len(pairs) + 1
        pairs.append((name, cat))
    cats = tuple(c for c, _ in data.categories)
    channels = tuple(tuple(i for i, (_, c, _) in enumerate(data.labels) if c == cat)
                     for cat in cats)
    local_of = {}
    for ci, chans in enumerate(channels):
        for li, ch in enumerate(chans):
            local_of[data.labels[ch][0]] = (ci, li)
    # an internal channel maps to 0 unless a visible label shares its name
    external = tuple(tuple(number.get(data.labels[ch][0], 0) for ch in chans)
                     for chans in channels)
    masks = tuple(None if m is None else local_of[m] for _, m in data.categories)
    return SemanticPlan(labels=LabelSet.from_pairs(pairs), categories=cats, channels=channels,
                        external=external, masks=masks)


def semantic_labels(plan: SemanticPlan, scores: jnp.ndarray) -> jnp.ndarray:
    """Scores ``[b, H, W, channels]`` -> ``[b, num_categories, H, W]`` int32 labels."""
    local = [jnp.argmax(scores[..., jnp.asarray(ch)], axis=-1) for ch in plan.channels]
    layers = []
    for ci, (ext, mask) in enumerate(zip(plan.external, plan.masks)):
        lab = jnp.asarray(np.asarray(ext, np.int32))[local[ci]]
        if mask is not None:
            lab = jnp.where(local[mask[0]] == mask[1], lab, 0)
        layers.append(lab)
    return jnp.stack(layers, axis=1)
