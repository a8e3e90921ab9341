"""Per-example rows of values, streaming and mergeable: a table ``[n, w]`` whose row
``i`` holds example ``i``'s values (e.g. a unit's spatially pooled activation, an
image's embedding), filled by global example index.

Each example is written by exactly one device of one process, every other copy of
its row stays zero, so ``merge`` (a sum) is exact and the table is identical for any
split of the examples over batches, devices and processes. ``count [n]`` records how
many times each row was written (1 everywhere once the whole source was read).
Memory: ``n * w * 4`` bytes per device; ``Rows.empty`` refuses more than ``limit``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import struct

#: the largest table ``Rows.empty`` makes by default, in bytes
ROWS_MEMORY = 1 << 30


@struct.dataclass
class Rows:
    """``values [n, w]`` float32 and ``count [n]`` int32 (rows written)."""

    values: jnp.ndarray
    count: jnp.ndarray

    @classmethod
    def empty(cls, n: int, width: int, limit: int = ROWS_MEMORY) -> "Rows":
        if n <= 0 or width <= 0:
            raise ValueError(f"Rows needs positive n and width, got {n}, {width}")
        if n * width * 4 > limit:
            raise ValueError(f"a table of {n} x {width} values needs {n * width * 4 >> 20} "
                             f"MiB, over the {limit >> 20} MiB limit: use fewer probe images")
        return cls(jnp.zeros((n, width), jnp.float32), jnp.zeros((n,), jnp.int32))

    def update(self, values: jnp.ndarray, index: jnp.ndarray,
               valid: jnp.ndarray | None = None) -> "Rows":
        """``values [b, w]`` of examples ``index [b]`` (``valid [b]``: padding rows
        are dropped)."""
        n, w = self.values.shape
        if values.ndim != 2 or values.shape[1] != w:
            raise ValueError(f"values must be [batch, {w}], got {values.shape}")
        keep = jnp.ones(index.shape, bool) if valid is None else valid
        # dropped rows go out of range, where scatter discards them
        target = jnp.where(keep, index.astype(jnp.int32), n)
        return Rows(self.values.at[target].add(values.astype(jnp.float32), mode="drop"),
                    self.count.at[target].add(1, mode="drop"))

    def merge(self, other: "Rows") -> "Rows":
        return Rows(self.values + other.values, self.count + other.count)

    def compute(self) -> np.ndarray:
        """The ``[n, w]`` table; ValueError unless every row was written exactly once."""
        count = np.asarray(self.count)
        bad = np.flatnonzero(count != 1)
        if bad.size:
            raise ValueError(f"rows {bad[:5].tolist()} were written {count[bad[:5]].tolist()} "
                             f"times, not once")
        return np.asarray(self.values)
