"""Exact wide integer counters for jitted code with x64 disabled.

A count is kept as two int32 arrays, ``hi * 2**30 + lo`` with ``0 <= lo < 2**30``,
so totals stay exact up to 2**61 while every addition inside ``jax.jit`` is int32.
Each single addition must be below 2**30 (a batch's pixel count, for example).
``to_numpy`` joins the halves into int64 on the host.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import struct

_BITS = 30
_MASK = (1 << _BITS) - 1


@struct.dataclass
class Wide:
    """Non-negative integer counts of any shape, exact up to 2**61."""

    hi: jnp.ndarray
    lo: jnp.ndarray

    @classmethod
    def zeros(cls, shape) -> "Wide":
        return cls(jnp.zeros(shape, jnp.int32), jnp.zeros(shape, jnp.int32))

    def add(self, x: jnp.ndarray) -> "Wide":
        """Adds int32 ``x`` (broadcast to this shape), each entry ``0 <= x < 2**30``."""
        lo = self.lo + x.astype(jnp.int32)
        return Wide(self.hi + (lo >> _BITS), lo & _MASK)

    def merge(self, other: "Wide") -> "Wide":
        lo = self.lo + other.lo
        return Wide(self.hi + other.hi + (lo >> _BITS), lo & _MASK)

    def to_numpy(self) -> np.ndarray:
        """The counts as an int64 NumPy array."""
        return (np.asarray(self.hi, np.int64) << _BITS) + np.asarray(self.lo, np.int64)
