"""Per-unit top-k images, streaming and mergeable.

Each image is scored per unit (the reference uses the maximum activation over
the image's positions, ``image_max``); the statistic keeps, for every unit, the
``k`` highest scores and their global image indices. Ties are broken by the
smaller image index, so the result never depends on batch size, order or device
count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

#: index stored in slots not yet filled (sorts after every real image)
_NO_IMAGE = np.iinfo(np.int32).max


def image_max(acts: jnp.ndarray) -> jnp.ndarray:
    """``[batch, ..., units]`` -> ``[batch, units]``, the maximum over positions."""
    return acts.reshape(acts.shape[0], -1, acts.shape[-1]).max(axis=1)


def _best(values: jnp.ndarray, index: jnp.ndarray, k: int):
    """Sorts each row by (value descending, index ascending) and keeps ``k``."""
    neg, idx = jax.lax.sort((-values, index), dimension=1, num_keys=2)
    return -neg[:, :k], idx[:, :k]


@struct.dataclass
class TopK:
    """``values`` ``[units, k]`` float32 descending; ``index`` ``[units, k]`` int32
    image indices (``_NO_IMAGE`` in unfilled slots, whose value is ``-inf``)."""

    values: jnp.ndarray
    index: jnp.ndarray

    @classmethod
    def empty(cls, units: int, k: int) -> "TopK":
        if units <= 0 or k <= 0:
            raise ValueError(f"TopK needs positive units and k, got {units}, {k}")
        return cls(jnp.full((units, k), -jnp.inf, jnp.float32),
                   jnp.full((units, k), _NO_IMAGE, jnp.int32))

    @property
    def k(self) -> int:
        return self.values.shape[1]

    def update(self, scores: jnp.ndarray, index: jnp.ndarray,
               valid: jnp.ndarray | None = None) -> "TopK":
        """``scores`` ``[batch, units]``, ``index`` ``[batch]`` int32 global image
        indices, ``valid`` ``[batch]`` bool (padding rows are ignored)."""
        units = self.values.shape[0]
        if scores.ndim != 2 or scores.shape[1] != units:
            raise ValueError(f"scores must be [batch, {units}], got {scores.shape}")
        scores = scores.astype(jnp.float32)
        index = index.astype(jnp.int32)
        if valid is not None:
            scores = jnp.where(valid[:, None], scores, -jnp.inf)
            index = jnp.where(valid, index, _NO_IMAGE)
        values = jnp.concatenate([self.values, scores.T], axis=1)
        idx = jnp.concatenate([self.index, jnp.broadcast_to(index, (units, index.shape[0]))],
                              axis=1)
        return TopK(*_best(values, idx, self.k))

    def merge(self, other: "TopK") -> "TopK":
        return TopK(*_best(jnp.concatenate([self.values, other.values], axis=1),
                           jnp.concatenate([self.index, other.index], axis=1), self.k))

    def compute(self) -> tuple[np.ndarray, np.ndarray]:
        """``(values [units, k], images [units, k])``; unfilled slots have image -1."""
        index = np.asarray(self.index).astype(np.int64)
        return np.asarray(self.values), np.where(index == _NO_IMAGE, -1, index)
