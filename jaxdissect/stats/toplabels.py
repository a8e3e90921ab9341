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

This replaces the reference's second pass (and a second model forward) whenever
``ceil(q n) <= B``; past that budget ``Quantile``'s radix select and ``IoUTally``
remain. Per-unit selection is ``merge_top`` (``jaxdissect.stats.select``).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdissect.stats.iou import iou_from_counts, label_areas, pixel_label_ids
from jaxdissect.stats.quantile import (
    as_levels,
    buffer_fits,
    buffer_levels,
    pixel_rows,
    rank_for_level,
)
from jaxdissect.stats.select import merge_top
from jaxdissect.stats.wide import Wide


@struct.dataclass
class TopLabels:
    """``top`` ``[u, B]`` float32: each unit's ``B`` largest values (any order,
    ``-inf`` where fewer were seen); ``labels`` ``[u, B, K]`` int32: the labels of
    each value's pixel (``num_labels`` = none); ``count`` values seen per unit;
    ``label_area`` ``[L]`` and ``pixels``: label pixel counts over all pixels."""

    top: jnp.ndarray
    labels: jnp.ndarray
    count: Wide
    label_area: Wide
    pixels: Wide

    @classmethod
    def empty(cls, units: int, budget: int, num_labels: int, layers: int) -> "TopLabels":
        if min(units, budget, num_labels, layers) <= 0:
            raise ValueError(f"TopLabels needs positive units, budget, labels and layers, "
                             f"got {units}, {budget}, {num_labels}, {layers}")
        return cls(jnp.full((units, budget), -jnp.inf, jnp.float32),
                   jnp.full((units, budget, layers), num_labels, jnp.int32),
                   Wide.zeros(()), Wide.zeros((num_labels,)), Wide.zeros(()))

    @property
    def budget(self) -> int:
        return self.top.shape[1]

    @property
    def num_labels(self) -> int:
        return self.label_area.hi.shape[0]

    def update(self, acts: jnp.ndarray, seg: jnp.ndarray,
               valid: jnp.ndarray | None = None) -> "TopLabels":
        """``acts`` ``[b, H, W, u]`` on the segmentation grid, ``seg`` ``[b, K, H, W]``
        int, ``valid`` ``[b]`` bool (padding images are ignored)."""
        units, _, layers = self.labels.shape
        b, h, w, u = acts.shape
        if u != units:
            raise ValueError(f"acts have {u} units, statistic has {units}")
        if seg.ndim != 4 or seg.shape != (b, layers, h, w):
            raise ValueError(f"seg must be [{b}, {layers}, {h}, {w}] to match acts "
                             f"{acts.shape}, got {seg.shape}")
        rows, pixels = pixel_rows(acts, valid, -jnp.inf)  # [N, u]
        ids = pixel_label_ids(seg, valid, self.num_labels)  # [N, K]
        top, labels = self._merged(rows, ids)
        area, _ = label_areas(ids, valid, self.num_labels, h * w)
        return TopLabels(top, labels, self.count.add(pixels), self.label_area.add(area),
                         self.pixels.add(pixels))

    def merge(self, other: "TopLabels") -> "TopLabels":
        top, labels = self._merged(other.top.T, other.labels)
        return TopLabels(top, labels, self.count.merge(other.count),
                         self.label_area.merge(other.label_area),
                         self.pixels.merge(other.pixels))

    def _merged(self, new: jnp.ndarray, new_labels: jnp.ndarray):
        """Top-B of the buffer and ``new`` ``[n, u]``; ``new_labels`` is ``[n, K]``
        (a batch's pixels, shared by all units) or ``[u, n, K]`` (another buffer)."""
        top, src = merge_top(self.top, new)
        budget = self.budget
        mine = jnp.take_along_axis(self.labels, jnp.minimum(src, budget - 1)[..., None], 1)
        theirs_idx = jnp.maximum(src - budget, 0)
        if new_labels.ndim == 2:
            theirs = new_labels[theirs_idx]  # [u, B, K]
        else:
            theirs = jnp.take_along_axis(new_labels, theirs_idx[..., None], 1)
        return top, jnp.where((src < budget)[..., None], mine, theirs)

    # ------------------------------------------------------------------ results

    def fits(self, q) -> bool:
        """Whether every level in ``q`` is answerable from this buffer."""
        return buffer_fits(self.count, self.budget, q)

    def thresholds(self, q) -> np.ndarray:
        """``[u]`` for a level, ``[len(q), u]`` for a sequence (the convention of
        ``Quantile.compute``); raises if a level needs more than the budget."""
        return buffer_levels(self.top, self.count, q)

    def counts(self, thresholds: np.ndarray) -> dict[str, np.ndarray]:
        """Exact int64 counts at ``thresholds`` ``[u]`` (``t_u`` must be at or above
        the unit's buffer minimum, as ``thresholds(q)`` is): ``inter`` ``[u, L]``,
        ``unit_area`` ``[u]``, ``label_area`` ``[L]``, ``pixels``."""
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
        return {"inter": inter.reshape(units, num).astype(np.int64),
                "unit_area": above.sum(axis=1).astype(np.int64),
                "label_area": self.label_area.to_numpy(),
                "pixels": self.pixels.to_numpy()}

    def iou(self, thresholds: np.ndarray) -> np.ndarray:
        """IoU ``[u, L]`` float64 at ``thresholds`` (column 0, "none", is 0)."""
        c = self.counts(thresholds)
        return iou_from_counts(c["inter"], c["unit_area"], c["label_area"])


def budget_for(q, n: int, multiple: int = 128) -> int:
    """The smallest multiple of ``multiple`` that fits every level in ``q`` over
    ``n`` values per unit."""
    k = max(rank_for_level(v, n) for v in as_levels(q)[0])
    return math.ceil(k / multiple) * multiple
