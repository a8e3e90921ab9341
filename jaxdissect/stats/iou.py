"""Exact IoU tallies between thresholded units and multi-label segmentations.

For unit ``u`` with threshold ``t_u`` and concept ``c``, over all images and
positions of the segmentation grid:

    A_u = acts_up > t_u,   S_c = any of the K labels of the pixel equals c,
    IoU(u, c) = |A_u ∧ S_c| / (|A_u| + |S_c| - |A_u ∧ S_c|)   (0 if the union is empty).

One compiled step per batch: the indicator ``[pixels, units]`` (int32) is summed
into label rows with ``segment_sum`` once per segmentation layer, a pixel's label in
layer k dropped when an earlier layer already gave it the same label (so it counts
once). Per-step counts are int32 (a step must have fewer than 2**30 pixels per
device, checked) and are added to ``Wide`` counters, exact to 2**61 without jax
x64. Label 0 ("none") is tallied like any label, but ``iou`` reports 0 for it so it
is never a unit's best. Label values outside ``[0, num_labels)`` are ignored.

Two union rules (``IOU_RULES``). ``"pnas"`` (above, the PNAS paper's and the
reference's) counts the unit's whole area. ``"netdissect"`` is the original
NetDissect's category-aware union, as NetDissect-Lite's ``FeatureOperator.tally``
computes it: each label ``c`` has one category ``g(c)`` (``LabelSet.categories``;
for Broden the label's primary category, where its coverage is largest), and in
each image ``i`` the unit's active pixels ``A_u^i`` count toward category ``g``
only if at least one of them carries a label of category ``g`` (in any layer; an
image-level label such as a scene covers every pixel, so it counts whenever the
unit fires in that image):

    |A_u|_g  = sum_i |A_u^i| * [some pixel of A_u^i has a label of category g]
    IoU(u, c) = |A_u ∧ S_c| / (|A_u|_g(c) + |S_c| - |A_u ∧ S_c|)

so a unit is not charged for firing on images where nothing it fires on is
annotated in the concept's category (parts of objects whose parts nobody
labelled, say). ``IoUTally(categories=...)`` tallies ``|A_u|_g`` as
``category_area`` ``[u, C]``. One deliberate difference: NetDissect counts a
pixel once per layer that carries ``c`` (a label repeated in two layers at one
pixel counts twice in both ``|A_u ∧ S_c|`` and ``|S_c|``); here a pixel counts
once per label under both rules, so IoU stays a ratio of set sizes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdissect.stats.wide import Wide

_MAX_PIXELS = 1 << 30  # Wide.add takes increments below 2**30

#: the union rules ``dissect(iou_rule=...)`` accepts; see the module docstring
IOU_RULES = ("pnas", "netdissect")


def check_iou_rule(rule: str) -> str:
    if rule not in IOU_RULES:
        raise ValueError(f"iou_rule must be one of {', '.join(IOU_RULES)}; got {rule!r}")
    return rule


@struct.dataclass
class IoUTally:
    """``inter`` ``[units, labels]`` = |A_u ∧ S_c|; ``unit_area`` ``[units]`` = |A_u|;
    ``label_area`` ``[labels]`` = |S_c|; ``pixels`` the number of pixels seen;
    ``category_area`` ``[units, C]`` = |A_u|_g of the "netdissect" rule (``C = 0``
    unless ``categories``, each label's category index (-1: none), was given)."""

    inter: Wide
    unit_area: Wide
    label_area: Wide
    pixels: Wide
    category_area: Wide
    categories: tuple = struct.field(pytree_node=False, default=())

    @classmethod
    def empty(cls, units: int, num_labels: int,
              categories: tuple[int, ...] | None = None) -> "IoUTally":
        if units <= 0 or num_labels <= 0:
            raise ValueError(f"IoUTally needs positive units and labels, got {units}, "
                             f"{num_labels}")
        categories = check_categories(categories, num_labels)
        return cls(Wide.zeros((units, num_labels)), Wide.zeros((units,)),
                   Wide.zeros((num_labels,)), Wide.zeros(()),
                   Wide.zeros((units, num_categories(categories))), categories)

    @property
    def shape(self) -> tuple[int, int]:
        return self.inter.hi.shape

    def update(self, acts: jnp.ndarray, thresholds: jnp.ndarray, seg: jnp.ndarray,
               valid: jnp.ndarray | None = None) -> "IoUTally":
        """``acts`` ``[batch, H, W, units]`` on the segmentation grid, ``thresholds``
        ``[units]``, ``seg`` ``[batch, K, H, W]`` int, ``valid`` ``[batch]`` bool."""
        units, num_labels = self.shape
        b, h, w, u = acts.shape
        if u != units or thresholds.shape != (units,):
            raise ValueError(f"acts have {u} units and thresholds {thresholds.shape}; "
                             f"statistic has {units} units")
        if seg.ndim != 4 or seg.shape[0] != b or seg.shape[2:] != (h, w):
            raise ValueError(f"seg must be [{b}, K, {h}, {w}] to match acts {acts.shape}, "
                             f"got {seg.shape}")
        n = b * h * w
        if n >= _MAX_PIXELS:
            raise ValueError(f"{n} pixels per step; keep each device's batch below 2**30 "
                             "pixels so int32 counts stay exact")
        active = acts > thresholds[None, None, None, :]  # [b,h,w,u]
        if valid is not None:
            active = active & valid[:, None, None, None]
        a = active.reshape(n, u).astype(jnp.int32)
        ids = pixel_label_ids(seg, valid, num_labels)
        inter = jnp.zeros((num_labels + 1, u), jnp.int32)  # last row: dropped labels
        for k in range(ids.shape[1]):
            inter = inter + jax.ops.segment_sum(a, ids[:, k], num_segments=num_labels + 1)
        area, pixels = label_areas(ids, valid, num_labels, h * w)
        category_area = self.category_area
        if self.categories:
            category_area = category_area.add(unit_category_area(
                a.reshape(b, h * w, u), category_masks(ids, self.categories).reshape(
                    b, h * w, -1)))
        return IoUTally(
            self.inter.add(inter[:num_labels].T),
            self.unit_area.add(jnp.sum(a, axis=0)),
            self.label_area.add(area),
            self.pixels.add(pixels), category_area, self.categories)

    def merge(self, other: "IoUTally") -> "IoUTally":
        return IoUTally(self.inter.merge(other.inter), self.unit_area.merge(other.unit_area),
                        self.label_area.merge(other.label_area),
                        self.pixels.merge(other.pixels),
                        self.category_area.merge(other.category_area), self.categories)

    def counts(self) -> dict[str, np.ndarray]:
        """The exact int64 counts: ``inter``, ``unit_area``, ``label_area``, ``pixels``,
        and ``category_area`` ``[u, C]`` if categories were given."""
        c = {"inter": self.inter.to_numpy(), "unit_area": self.unit_area.to_numpy(),
             "label_area": self.label_area.to_numpy(), "pixels": self.pixels.to_numpy()}
        if self.categories:
            c["category_area"] = self.category_area.to_numpy()
        return c

    def compute(self) -> np.ndarray:
        """IoU ``[units, labels]`` float64 (column 0, "none", is 0), under the
        "netdissect" rule if categories were given, else the "pnas" rule."""
        c = self.counts()
        return iou_from_counts(c["inter"], union_unit_area(c, self.categories),
                               c["label_area"])


def pixel_label_ids(seg: jnp.ndarray, valid: jnp.ndarray | None,
                    num_labels: int) -> jnp.ndarray:
    """``seg`` ``[b, K, H, W]`` -> ``[b*H*W, K]`` int32 label ids per pixel, with
    ``num_labels`` (out of range: "dropped") where the label is invalid, repeats an
    earlier layer's label at that pixel (so a pixel counts once per label), or the
    image is padding (``valid`` ``[b]`` False)."""
    b, k, h, w = seg.shape
    ids = jnp.moveaxis(seg.astype(jnp.int32), 1, -1).reshape(b * h * w, k)
    drop = (ids < 0) | (ids >= num_labels)
    if valid is not None:
        drop = drop | ~jnp.repeat(valid, h * w)[:, None]
    for layer in range(1, k):
        for j in range(layer):
            drop = drop.at[:, layer].set(drop[:, layer] | (ids[:, j] == ids[:, layer]))
    return jnp.where(drop, num_labels, ids)


def label_areas(ids: jnp.ndarray, valid: jnp.ndarray | None, num_labels: int,
                pixels_per_image: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(area [num_labels] int32, pixels int32)`` of ``pixel_label_ids`` output:
    each label's pixel count and the number of valid pixels."""
    area = jnp.bincount(ids.reshape(-1), length=num_labels + 1)[:num_labels]
    if valid is None:
        pixels = jnp.asarray(ids.shape[0], jnp.int32)
    else:
        pixels = jnp.sum(valid.astype(jnp.int32)) * pixels_per_image
    return area.astype(jnp.int32), pixels


def check_categories(categories, num_labels: int) -> tuple[int, ...]:
    """``categories`` (each label's category index, -1 for none; or None) as a
    tuple, checked against ``num_labels``."""
    if categories is None:
        return ()
    categories = tuple(int(c) for c in categories)
    if len(categories) != num_labels or min(categories) < -1:
        raise ValueError(f"categories must give {num_labels} category indices (-1: none), "
                         f"got {len(categories)}")
    if max(categories) < 0:
        raise ValueError("categories: no label has a category")
    return categories


def num_categories(categories: tuple[int, ...]) -> int:
    return max(categories) + 1 if categories else 0


def category_masks(ids: jnp.ndarray, categories: tuple[int, ...]) -> jnp.ndarray:
    """``ids`` ``[N, K]`` from ``pixel_label_ids`` -> ``[N, C]`` int32: 1 where the
    pixel carries a label of category g in some layer (dropped ids carry none)."""
    c = num_categories(categories)
    lookup = jnp.asarray(np.array(categories + (-1,), np.int32))  # id num_labels: dropped
    cat = lookup[ids]  # [N, K]
    return jnp.any(cat[..., None] == jnp.arange(c)[None, None], axis=1).astype(jnp.int32)


def unit_category_area(active: jnp.ndarray, masks: jnp.ndarray) -> jnp.ndarray:
    """``active`` ``[b, P, u]`` int32 0/1 and ``masks`` ``[b, P, C]`` int32 ->
    ``[u, C]`` int32: the "netdissect" rule's |A_u|_g of these images (each image's
    unit area where one of its active pixels carries category g)."""
    touched = jnp.einsum("bpu,bpc->buc", active, masks) > 0
    area = jnp.sum(active, axis=1)  # [b, u]
    return jnp.sum(area[..., None] * touched, axis=0, dtype=jnp.int32)


def union_unit_area(counts: dict[str, np.ndarray], categories=()) -> np.ndarray:
    """The unit's side of the union: ``unit_area`` ``[u]`` ("pnas"), or, when
    ``categories`` (each label's category index) is given, ``category_area[:, g(c)]``
    ``[u, L]`` ("netdissect"; 0 for labels without a category)."""
    if not len(categories):
        return np.asarray(counts["unit_area"], np.int64)
    cats = np.asarray(categories, np.int64)
    area = np.asarray(counts["category_area"], np.int64)
    return np.where(cats[None] >= 0, area[:, np.maximum(cats, 0)], 0)


def iou_from_counts(inter: np.ndarray, unit_area: np.ndarray,
                    label_area: np.ndarray) -> np.ndarray:
    """``inter / (unit_area + label_area - inter)``, 0 where the union is empty and
    in column 0. Shapes ``[u, L]``, ``[u]`` (or ``[u, L]``, the "netdissect" rule's
    per-label unit side), ``[L]`` -> ``[u, L]``."""
    inter = np.asarray(inter, np.int64)
    unit_area = np.asarray(unit_area, np.int64)
    if unit_area.ndim == 1:
        unit_area = unit_area[:, None]
    union = unit_area + np.asarray(label_area, np.int64)[None] - inter
    iou = np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)
    iou[:, 0] = 0.0
    return iou


def best_labels(iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's best concept ``[u]`` (label >= 1; the lowest label on ties) and
    its IoU ``[u]``."""
    best = 1 + np.argmax(iou[:, 1:], axis=1)
    return best, iou[np.arange(iou.shape[0]), best]


def pairs_above(iou: np.ndarray, miniou: float) -> list[tuple[int, int, float]]:
    """Every ``(unit, label, iou)`` with ``iou > miniou``, sorted by unit then IoU
    descending."""
    units, labels = np.nonzero(iou > miniou)
    rows = [(int(u), int(c), float(iou[u, c])) for u, c in zip(units, labels) if c > 0]
    return sorted(rows, key=lambda r: (r[0], -r[2], r[1]))


def best_by_category(iou: np.ndarray, categories) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For each category name, each unit's best label of that category and its IoU
    (``categories[i]`` is label i's category; label 0 is skipped)."""
    categories = list(categories)
    if len(categories) != iou.shape[1]:
        raise ValueError(f"{len(categories)} categories for {iou.shape[1]} labels")
    out = {}
    for cat in dict.fromkeys(categories[1:]):
        cols = np.array([i for i, c in enumerate(categories) if c == cat and i > 0])
        sub = iou[:, cols]
        j = np.argmax(sub, axis=1)
        out[cat] = (cols[j], sub[np.arange(iou.shape[0]), j])
    return out


