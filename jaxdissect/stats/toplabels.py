"""Thresholds and IoU in one pass: each unit's largest values with their labels.

When the threshold's rank ``k = ceil(q n)`` fits a per-unit budget ``B``, every
value strictly above the threshold is among the unit's ``B`` largest (fewer than
``k`` values exceed the ``k``-th largest). So a buffer of each unit's ``B``
largest upsampled values, each kept with the segmentation labels of its pixel,
answers both questions of a dissection exactly, from a single pass over the data:

    t_u          = the k-th largest buffered value of unit u
    |A_u|        = buffered values of u strictly above t_u
    |A_u ∧ S_c|  = those whose pixel carries label c (counted once per pixel)
    |S_c|        = tallied for every pixel as the pass goes (``label_areas``)

The "netdissect" union rule (``stats.iou``) also needs each active value's image:
``TopLabels.empty(..., track_images=True)`` keeps each buffered value's image
index, and ``counts(t, categories)`` groups the active values by image to give
``|A_u|_g``.

This replaces the reference's second pass (and a second model forward) whenever
``ceil(q n) <= B``; past that budget ``Quantile``'s radix select and ``IoUTally``
remain. Per-unit selection is ``merge_top`` (``jaxdissect.stats.select``); given the
activations on their own grid and the ``upsample`` that maps them onto the
segmentation's, ``merge_top_upsampled`` (``stats.upsample_merge``: on CPU the upsampled
maps are computed inside the selection and never written out).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdissect.stats.iou import (
    check_categories,
    iou_from_counts,
    label_areas,
    num_categories,
    pixel_label_ids,
    union_unit_area,
)
from jaxdissect.stats.quantile import (
    as_levels,
    buffer_fits,
    buffer_levels,
    pixel_rows,
    rank_for_level,
)
from jaxdissect.stats.select import merge_top
from jaxdissect.stats.upsample_merge import merge_top_upsampled
from jaxdissect.stats.wide import Wide


@struct.dataclass
class TopLabels:
    """``top`` ``[u, B]`` float32: each unit's ``B`` largest values (any order,
    ``-inf`` where fewer were seen); ``labels`` ``[u, B, K]`` int32: the labels of
    each value's pixel (``num_labels`` = none); ``count`` values seen per unit;
    ``label_area`` ``[L]`` and ``pixels``: label pixel counts over all pixels;
    ``images`` ``[u, B]`` int32: each value's image index (-1: none) if
    ``track_images``, else ``[u, 0]``."""

    top: jnp.ndarray
    labels: jnp.ndarray
    count: Wide
    label_area: Wide
    pixels: Wide
    images: jnp.ndarray

    @classmethod
    def empty(cls, units: int, budget: int, num_labels: int, layers: int,
              track_images: bool = False) -> "TopLabels":
        if min(units, budget, num_labels, layers) <= 0:
            raise ValueError(f"TopLabels needs positive units, budget, labels and layers, "
                             f"got {units}, {budget}, {num_labels}, {layers}")
        return cls(jnp.full((units, budget), -jnp.inf, jnp.float32),
                   jnp.full((units, budget, layers), num_labels, jnp.int32),
                   Wide.zeros(()), Wide.zeros((num_labels,)), Wide.zeros(()),
                   jnp.full((units, budget if track_images else 0), -1, jnp.int32))

    @property
    def tracks_images(self) -> bool:
        return self.images.shape[1] > 0

    @property
    def budget(self) -> int:
        return self.top.shape[1]

    @property
    def num_labels(self) -> int:
        return self.label_area.hi.shape[0]

    def update(self, acts: jnp.ndarray, seg: jnp.ndarray,
               valid: jnp.ndarray | None = None,
               index: jnp.ndarray | None = None,
               upsample: Callable[[jax.Array], jax.Array] | None = None) -> "TopLabels":
        """``acts`` ``[b, H, W, u]`` on the segmentation grid, or, with ``upsample``,
        ``[b, h, w, u]`` that ``upsample`` maps onto it (``stats.upsample_merge``:
        on CPU an ``Upsampler``'s output is never materialised); ``seg``
        ``[b, K, H, W]`` int, ``valid`` ``[b]`` bool (padding images are ignored),
        ``index`` ``[b]`` int32 the images' indices (needed when tracking images)."""
        units, _, layers = self.labels.shape
        grid = acts.shape if upsample is None else jax.eval_shape(upsample, acts).shape
        b, h, w, u = grid
        if u != units:
            raise ValueError(f"acts have {u} units, statistic has {units}")
        if seg.ndim != 4 or seg.shape != (b, layers, h, w):
            raise ValueError(f"seg must be [{b}, {layers}, {h}, {w}] to match acts "
                             f"{tuple(grid)}, got {seg.shape}")
        if upsample is None:
            merged = merge_top(self.top, pixel_rows(acts, valid, -jnp.inf)[0])
        else:
            merged = merge_top_upsampled(self.top, acts, valid, upsample)
        ids = pixel_label_ids(seg, valid, self.num_labels)  # [N, K]
        if self.tracks_images:
            if index is None:
                raise ValueError("this TopLabels tracks images: pass index [b]")
            ids = jnp.concatenate(  # each pixel's image index rides along as a column
                [ids, jnp.repeat(index.astype(jnp.int32), h * w)[:, None]], axis=1)
        top, payload = self._merged(merged, ids)
        area, pixels = label_areas(ids[:, :layers], valid, self.num_labels, h * w)
        return TopLabels(top, payload[..., :layers], self.count.add(pixels),
                         self.label_area.add(area), self.pixels.add(pixels),
                         payload[..., layers:].reshape(self.images.shape))

    def merge(self, other: "TopLabels") -> "TopLabels":
        top, payload = self._merged(merge_top(self.top, other.top.T), other._payload())
        layers = self.labels.shape[2]
        return TopLabels(top, payload[..., :layers], self.count.merge(other.count),
                         self.label_area.merge(other.label_area),
                         self.pixels.merge(other.pixels),
                         payload[..., layers:].reshape(self.images.shape))

    def _payload(self) -> jnp.ndarray:
        """``[u, B, K (+1)]``: each value's labels (and image index if tracked)."""
        if not self.tracks_images:
            return self.labels
        return jnp.concatenate([self.labels, self.images[..., None]], axis=2)

    def _merged(self, merged: tuple[jnp.ndarray, jnp.ndarray], new_payload: jnp.ndarray):
        """``(top, payload)``: ``merged`` (``merge_top``'s values and sources, of the
        buffer and ``n`` new values per unit) with each value's payload
        (``_payload``); ``new_payload`` is ``[n, P]`` (a batch's pixels, shared by all
        units) or ``[u, n, P]`` (another buffer)."""
        top, src = merged
        budget = self.budget
        mine = jnp.take_along_axis(self._payload(), jnp.minimum(src, budget - 1)[..., None],
                                   1)
        theirs_idx = jnp.maximum(src - budget, 0)
        if new_payload.ndim == 2:
            theirs = new_payload[theirs_idx]  # [u, B, P]
        else:
            theirs = jnp.take_along_axis(new_payload, theirs_idx[..., None], 1)
        return top, jnp.where((src < budget)[..., None], mine, theirs)

    # ------------------------------------------------------------------ results

    def fits(self, q) -> bool:
        """Whether every level in ``q`` is answerable from this buffer."""
        return buffer_fits(self.count, self.budget, q)

    def thresholds(self, q) -> np.ndarray:
        """``[u]`` for a level, ``[len(q), u]`` for a sequence (the convention of
        ``Quantile.compute``); raises if a level needs more than the budget."""
        return buffer_levels(self.top, self.count, q)

    def counts(self, thresholds: np.ndarray,
               categories: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
        """Exact int64 counts at ``thresholds`` ``[u]`` (``t_u`` must be at or above
        the unit's buffer minimum, as ``thresholds(q)`` is): ``inter`` ``[u, L]``,
        ``unit_area`` ``[u]``, ``label_area`` ``[L]``, ``pixels``; with
        ``categories`` (each label's category index, -1: none; needs
        ``track_images``) also the "netdissect" rule's ``category_area`` ``[u, C]``."""
        top = np.asarray(self.top)
        t = np.asarray(thresholds, np.float32)
        if t.shape != (top.shape[0],):
            raise ValueError(f"thresholds {t.shape} for {top.shape[0]} units")
        if np.any(t < top.min(axis=1)) and self.count.to_numpy() > self.budget:
            raise ValueError("a threshold is below the buffer's smallest value: values "
                             "above it may have been dropped")
        above = top > t[:, None]  # [u, B]
        units, length = top.shape
        num = self.num_labels
        labels = np.asarray(self.labels)  # [u, B, K]
        rows = np.broadcast_to(np.arange(units)[:, None, None], labels.shape)
        hit = above[..., None] & (labels < num)
        inter = np.bincount(rows[hit] * num + labels[hit], minlength=units * num)
        out = {"inter": inter.reshape(units, num).astype(np.int64),
               "unit_area": above.sum(axis=1).astype(np.int64),
               "label_area": self.label_area.to_numpy(),
               "pixels": self.pixels.to_numpy()}
        if categories is not None:
            if not self.tracks_images:
                raise ValueError("category areas need TopLabels.empty(..., "
                                 "track_images=True)")
            categories = check_categories(categories, num)
            out["category_area"] = _category_area(above, labels, np.asarray(self.images),
                                                  categories)
        return out

    def iou(self, thresholds: np.ndarray,
            categories: tuple[int, ...] | None = None) -> np.ndarray:
        """IoU ``[u, L]`` float64 at ``thresholds`` (column 0, "none", is 0); the
        "netdissect" rule if ``categories`` is given, else the "pnas" rule."""
        c = self.counts(thresholds, categories)
        return iou_from_counts(c["inter"], union_unit_area(c, categories or ()),
                               c["label_area"])


def _category_area(above: np.ndarray, labels: np.ndarray, images: np.ndarray,
                   categories: tuple[int, ...]) -> np.ndarray:
    """The "netdissect" rule's ``|A_u|_g`` ``[u, C]`` int64 from the active values
    (``above`` ``[u, B]``) with their labels ``[u, B, K]`` and images ``[u, B]``:
    per (unit, image), the active count if one of them carries category g."""
    c = num_categories(categories)
    lookup = np.array(categories + (-1,), np.int64)  # label num_labels: none
    unit, slot = np.nonzero(above)
    cats = lookup[labels[unit, slot]]  # [n, K]
    carries = (cats[..., None] == np.arange(c)).any(axis=1)  # [n, C]
    _, group = np.unique(np.stack([unit, images[unit, slot]]), axis=1, return_inverse=True)
    group = group.reshape(-1)
    groups = group.max() + 1 if len(group) else 0
    size = np.bincount(group, minlength=groups)  # [G] active values per (unit, image)
    touched = np.zeros((groups, c), bool)
    np.logical_or.at(touched, group, carries)
    owner = np.zeros(groups, np.int64)
    owner[group] = unit
    area = np.zeros((above.shape[0], c), np.int64)
    np.add.at(area, owner, size[:, None] * touched)
    return area


def budget_for(q, n: int, multiple: int = 128) -> int:
    """The smallest multiple of ``multiple`` that fits every level in ``q`` over
    ``n`` values per unit."""
    k = max(rank_for_level(v, n) for v in as_levels(q)[0])
    return math.ceil(k / multiple) * multiple
