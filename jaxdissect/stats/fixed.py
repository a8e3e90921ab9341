"""Exact, order-free sums of real values: each value is rounded once to a multiple
of ``2**-bits`` (fixed point), then the integers are summed exactly.

Floating-point sums depend on the order of the additions, so a statistic summed
in float32 over 1 device and over 4 (or over 1 process and 2) differs in its last
bits. Here every example's value ``x`` becomes ``q = round(x * 2**bits)`` (int32,
``|x|`` clipped to ``2**(30 - bits)``), split into ``hi = q >> 15`` and ``lo = q &
0x7fff``, and the halves are summed into ``stats.wide.Wide`` counters (exact int32
arithmetic with a carry). The total is ``(sum(hi) * 2**15 + sum(lo)) / 2**bits``,
the same for any split of the examples over batches, devices and processes.

``bits`` trades range for resolution: 24 for shares in [-1, 1] (resolution 6e-8;
pixel shares of images up to 4096 pixels are exact), 16 for log-probabilities and
logit differences up to 16384 (resolution 1.5e-5).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdissect.stats.wide import Wide

_SPLIT = 15


def parts(x: jnp.ndarray, bits: int, axis=0) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(hi, lo)`` int32 sums over ``axis`` of the fixed-point values of ``x``; each
    sum is exact for up to ``2**13`` values along ``axis``."""
    return split_sum(quantize(x, bits), axis)


def split_sum(q: jnp.ndarray, axis=0) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(hi, lo)`` int32 sums over ``axis`` of quantized values ``q`` (from
    ``quantize``), for ``FixedSum.add_parts``."""
    hi, lo = _halves(q)
    return hi.sum(axis, dtype=jnp.int32), lo.sum(axis, dtype=jnp.int32)


def _halves(q: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``q = hi * 2**15 + lo`` with ``0 <= lo < 2**15``."""
    return q >> _SPLIT, q & ((1 << _SPLIT) - 1)


def quantize(x: jnp.ndarray, bits: int) -> jnp.ndarray:
    """Each value of ``x`` rounded to a multiple of ``2**-bits``, as int32 units."""
    limit = float(2 ** (30 - bits)) - 1.0
    return jnp.round(jnp.clip(x.astype(jnp.float32), -limit, limit) * (2.0 ** bits)).astype(
        jnp.int32)


def weighted_parts(q: jnp.ndarray, weights: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(hi, lo)`` ``[B, ...]`` int32 sums ``sum_i weights[i, r] * q[i, ...]`` of
    per-example quantized values ``q [b, ...]`` (from ``quantize``) with integer
    weights ``[b, B]`` (e.g. Poisson-bootstrap counts); exact while the weights of
    a batch sum to less than ``2**15``."""
    w = weights.T.astype(jnp.int32)
    hi, lo = _halves(q.reshape(q.shape[0], -1))
    hi, lo = w @ hi, w @ lo
    return hi.reshape(w.shape[:1] + q.shape[1:]), lo.reshape(w.shape[:1] + q.shape[1:])


@struct.dataclass
class FixedSum:
    """Exact sums ``[...]`` of values rounded to multiples of ``2**-bits``."""

    hi: Wide
    lo: Wide
    bits: int = struct.field(pytree_node=False, default=16)

    @classmethod
    def zeros(cls, shape, bits: int = 16) -> "FixedSum":
        return cls(Wide.zeros(shape), Wide.zeros(shape), bits)

    def add(self, x: jnp.ndarray, axis=0, where: jnp.ndarray | None = None) -> "FixedSum":
        """Adds ``x`` summed over ``axis`` (the values where ``where`` holds)."""
        if where is not None:
            x = jnp.where(where, x, 0.0)
        return self.add_parts(*parts(x, self.bits, axis))

    def add_parts(self, hi: jnp.ndarray, lo: jnp.ndarray) -> "FixedSum":
        """Adds sums made by ``parts`` (e.g. inside a ``vmap``)."""
        # Wide's carry is a floor shift, so signed addends below 2**30 are exact too
        return FixedSum(self.hi.add(hi), self.lo.add(lo), self.bits)

    def merge(self, other: "FixedSum") -> "FixedSum":
        return FixedSum(self.hi.merge(other.hi), self.lo.merge(other.lo), self.bits)

    def to_numpy(self) -> np.ndarray:
        """The sums as float64."""
        q = (self.hi.to_numpy() << _SPLIT) + self.lo.to_numpy()
        return q.astype(np.float64) / 2.0 ** self.bits


def merge_fields(a, b):
    """Merges two statistics (``struct.dataclass``es) field by field: ``FixedSum`` and
    ``Wide`` fields by their ``merge``, int32 counts by addition."""
    return type(a)(*(x.merge(y) if hasattr(x, "merge") else x + y
                     for x, y in zip(_values(a), _values(b))))


def numpy_fields(stat) -> dict:
    """A statistic's fields as NumPy: sums as float64, counts as int64."""
    return {name: (v.to_numpy() if hasattr(v, "to_numpy") else np.asarray(v, np.int64))
            for name, v in zip(_names(stat), _values(stat))}


def _names(stat) -> list[str]:
    return [f.name for f in dataclasses.fields(stat)]


def _values(stat) -> list:
    return [getattr(stat, n) for n in _names(stat)]
