"""Exact per-unit quantile thresholds, streaming and mergeable.

Convention (met exactly, ties included): for ``n`` values of a unit and a level
``q`` in (0, 1], the threshold is the ``k``-th largest value with
``k = max(1, ceil(q * n))``, ``q`` read as the decimal it prints as (``0.01`` is
exactly 1/100). So fewer than ``k`` values are strictly above the threshold and at
least ``k`` are at or above it. The reference's "top 1% quantile" is ``q = 0.01``;
its "99.5% level" used for insertion values is ``q = 0.005``.

Two exact statistics, both with memory independent of the number of images:

* ``Quantile``: each unit's ``budget`` largest values, merged by ``merge_top``
  (``jaxdissect.stats.select``). One pass; answers every level with
  ``ceil(q * n) <= budget``. ``TopLabels`` (``stats.toplabels``) is the same buffer
  carrying each value's pixel labels, so that the IoU comes from the same pass.
* ``RadixHistogram``: when ``ceil(q * n)`` exceeds any reasonable budget, an exact
  most-significant-digit radix select over the values' order-preserving 32-bit
  keys. Pass 1 counts the top 11 key bits per unit; the host picks the bin that
  holds rank ``k`` (``refine``); pass 2 counts the next 11 bits inside that bin,
  pass 3 the last 10. Memory ``[units, levels, 2048]`` counts; three passes over
  the data. ``radix_thresholds`` runs the passes over a re-iterable stream.

NaN values are not supported.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdissect.stats import kernels, native
from jaxdissect.stats.select import merge_top
from jaxdissect.stats.wide import Wide

#: (bits already known, bits counted) for each radix pass; sums to 32.
RADIX_SCHEDULE = ((0, 11), (11, 11), (22, 10))


def rank_for_level(q: float, n: int) -> int:
    """``k = max(1, ceil(q * n))``, with ``q`` taken as its shortest decimal."""
    if not 0 < q <= 1:
        raise ValueError(f"quantile level must be in (0, 1], got {q}")
    if n <= 0:
        raise ValueError("no values were tallied, so no quantile is defined")
    return max(1, math.ceil(Fraction(repr(float(q))) * n))


def as_levels(q) -> tuple[tuple[float, ...], bool]:
    """``(levels, was_scalar)`` for a level or a sequence of levels."""
    if np.ndim(q) == 0:
        return (float(q),), True
    return tuple(float(v) for v in q), False


def pixel_rows(x: jnp.ndarray, valid, fill) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``x [b, ..., u]`` -> ``[b * positions, u]`` float32 (the layout ``merge_top``
    takes) with invalid images set to ``fill``; also returns the number of valid
    values per unit (int32)."""
    if x.ndim < 2:
        raise ValueError(f"expected values [batch, ..., units], got shape {x.shape}")
    b, u = x.shape[0], x.shape[-1]
    positions = math.prod(x.shape[1:-1])
    x = x.astype(jnp.float32).reshape(b, positions, u)
    if valid is None:
        n = jnp.int32(b * positions)
    else:
        x = jnp.where(valid[:, None, None], x, fill)
        n = jnp.sum(valid.astype(jnp.int32)) * positions
    return x.reshape(b * positions, u), n


@struct.dataclass
class Quantile:
    """Each unit's ``budget`` largest values seen so far, in no particular order.

    ``top`` ``[units, budget]`` float32 (``-inf`` where fewer values were seen);
    ``count`` the number of values seen per unit.
    """

    top: jnp.ndarray
    count: Wide

    @classmethod
    def empty(cls, units: int, budget: int) -> "Quantile":
        if units <= 0 or budget <= 0:
            raise ValueError(f"Quantile needs positive units and budget, got {units}, {budget}")
        return cls(jnp.full((units, budget), -jnp.inf, jnp.float32), Wide.zeros(()))

    @property
    def budget(self) -> int:
        return self.top.shape[1]

    def update(self, x: jnp.ndarray, valid: jnp.ndarray | None = None) -> "Quantile":
        """Adds ``x`` ``[batch, ..., units]``; ``valid`` ``[batch]`` bool masks padding."""
        if x.shape[-1] != self.top.shape[0]:
            raise ValueError(f"values have {x.shape[-1]} units, statistic has "
                             f"{self.top.shape[0]}")
        rows, n = pixel_rows(x, valid, -jnp.inf)
        top, _ = merge_top(self.top, rows)
        return Quantile(top, self.count.add(n))

    def merge(self, other: "Quantile") -> "Quantile":
        top, _ = merge_top(self.top, other.top.T)
        return Quantile(top, self.count.merge(other.count))

    def fits(self, q) -> bool:
        """Whether every level in ``q`` is answerable from this buffer."""
        return buffer_fits(self.count, self.budget, q)

    def compute(self, q) -> np.ndarray:
        """Thresholds ``[units]`` for a level ``q``, or ``[len(q), units]`` for a
        sequence of levels; raises if a level needs more than ``budget`` values."""
        return buffer_levels(self.top, self.count, q)


def buffer_fits(count: Wide, budget: int, q) -> bool:
    """Whether a top-``budget`` buffer over ``count`` values answers every level."""
    n = int(count.to_numpy())
    return all(rank_for_level(v, n) <= budget for v in as_levels(q)[0])


def buffer_levels(top, count: Wide, q) -> np.ndarray:
    """Thresholds from a buffer ``top`` ``[u, B]`` of each unit's ``B`` largest of
    ``count`` values (any order): ``[u]`` for a level, ``[len(q), u]`` for a
    sequence; raises if a level needs more than ``B`` values."""
    top = np.asarray(top)
    levels, scalar = as_levels(q)
    n = int(count.to_numpy())
    ks = [rank_for_level(v, n) for v in levels]
    if max(ks) > top.shape[1]:
        raise ValueError(
            f"level q={levels[int(np.argmax(ks))]} over {n} values per unit needs the "
            f"{max(ks)}-th largest, but the buffer keeps {top.shape[1]}; raise the budget "
            "or use the radix select (RadixHistogram)")
    ordered = -np.sort(-top, axis=1)
    out = np.stack([ordered[:, k - 1] for k in ks])
    return out[0] if scalar else out


# ----------------------------------------------------------------------------
# Exact radix select


def float_to_key(x: jnp.ndarray) -> jnp.ndarray:
    """float32 -> uint32 key with the same order (``-0.0`` just below ``+0.0``)."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    return jnp.where((bits >> 31) == 1, ~bits, bits | jnp.uint32(0x80000000))


def key_to_float(key: np.ndarray) -> np.ndarray:
    """Inverse of ``float_to_key``, in NumPy."""
    key = np.asarray(key, np.uint32)
    bits = np.where(key >> 31 == 1, key & np.uint32(0x7FFFFFFF), ~key).astype(np.uint32)
    return bits.view(np.float32)


@struct.dataclass
class RadixHistogram:
    """One radix-select pass: for each unit and level, counts of the next ``bits``
    key bits among values whose high ``known`` bits equal ``prefix``.

    ``prefix`` ``[units, levels]`` uint32; ``counts`` ``[units, levels, 2**bits]``;
    ``count`` the number of values seen per unit.
    """

    prefix: jnp.ndarray
    counts: Wide
    count: Wide
    known: int = struct.field(pytree_node=False)
    bits: int = struct.field(pytree_node=False)

    @classmethod
    def empty(cls, units: int, levels: int, known: int = 0, bits: int = 11,
              prefix: np.ndarray | None = None) -> "RadixHistogram":
        if not 0 <= known < known + bits <= 32:
            raise ValueError(f"bad radix pass: known={known}, bits={bits}")
        if prefix is None:
            prefix = np.zeros((units, levels), np.uint32)
        prefix = jnp.asarray(prefix, jnp.uint32)
        if prefix.shape != (units, levels):
            raise ValueError(f"prefix shape {prefix.shape} != {(units, levels)}")
        return cls(prefix, Wide.zeros((units, levels, 1 << bits)), Wide.zeros(()),
                   known, bits)

    def update(self, x: jnp.ndarray, valid: jnp.ndarray | None = None) -> "RadixHistogram":
        """Adds ``x`` ``[batch, ..., units]``; ``valid`` ``[batch]`` bool masks padding."""
        units, levels = self.prefix.shape
        if x.ndim < 2 or x.shape[-1] != units:
            raise ValueError(f"values have shape {x.shape}, statistic has {units} units")
        b = x.shape[0]
        positions = math.prod(x.shape[1:-1])
        rows = x.astype(jnp.float32).reshape(b * positions, units)
        if valid is None:
            ok, n = jnp.ones((b * positions,), jnp.uint8), jnp.int32(b * positions)
        else:
            ok = jnp.repeat(valid, positions).astype(jnp.uint8)
            n = jnp.sum(valid.astype(jnp.int32)) * positions
        shape = (units, levels, 1 << self.bits)
        kernel = functools.partial(_xla_histogram, shape=shape, known=self.known,
                                   bits=self.bits)
        target = native.target("radix_histogram")
        if target is not None:
            cpu = functools.partial(_native_histogram, target, shape=shape,
                                    known=self.known, bits=self.bits)
            hist = kernels.platform_dependent(rows, ok, self.prefix, cpu=cpu, default=kernel)
        else:
            hist = kernel(rows, ok, self.prefix)
        return self.replace(counts=self.counts.add(hist), count=self.count.add(n))

    def merge(self, other: "RadixHistogram") -> "RadixHistogram":
        return self.replace(counts=self.counts.merge(other.counts),
                            count=self.count.merge(other.count))


def _native_histogram(target, rows, ok, prefix, *, shape, known, bits):
    """One radix pass by the native CPU kernel (``stats/cpu_kernels.cc``)."""
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.int32),
                            vmap_method="sequential")
    return call(rows, ok, prefix, known=np.int64(known), bits=np.int64(bits))


def _xla_histogram(rows, ok, prefix, *, shape, known, bits):
    """One radix pass as XLA scatter-adds: ``rows`` ``[n, u]``, ``ok`` ``[n]``,
    ``prefix`` ``[u, L]`` -> counts ``shape`` = ``[u, L, 2**bits]`` int32."""
    units, levels, nbins = shape
    keys = float_to_key(rows.T)  # [u, n]
    digit = ((keys >> (32 - known - bits)) & (nbins - 1)).astype(jnp.int32)
    good = jnp.broadcast_to(ok[None, :] != 0, keys.shape)
    base = (jnp.arange(units, dtype=jnp.int32) * levels)[:, None]
    hist = jnp.zeros(units * levels * nbins, jnp.int32)
    dump = units * levels * nbins  # out of range: dropped
    for j in range(levels):
        match = good
        if known:
            match = match & ((keys >> (32 - known)) == prefix[:, j:j + 1])
        idx = jnp.where(match, (base + j) * nbins + digit, dump)
        hist = hist.at[idx.reshape(-1)].add(1, mode="drop")
    return hist.reshape(shape)


def radix_refine(hist: RadixHistogram, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Host step between passes. ``ranks`` ``[units, levels]``: the sought value's
    1-based rank from the top among values matching the prefix. Returns the
    prefix extended by the bin holding that rank and the rank inside that bin."""
    counts = hist.counts.to_numpy()  # [u, m, bins]
    at_or_above = np.cumsum(counts[..., ::-1], axis=-1)[..., ::-1]
    ranks = np.asarray(ranks, np.int64)
    if np.any(at_or_above[..., 0] < ranks):
        raise ValueError("radix select: fewer matching values than the sought rank "
                         "(was the data different between passes?)")
    digit = (at_or_above >= ranks[..., None]).sum(-1) - 1  # at_or_above is non-increasing
    strictly_above = np.pad(at_or_above, [(0, 0), (0, 0), (0, 1)])[..., 1:]
    above = np.take_along_axis(strictly_above, digit[..., None], -1)[..., 0]
    prefix = (np.asarray(hist.prefix, np.uint64) << np.uint64(hist.bits)) | digit.astype(
        np.uint64)
    return prefix.astype(np.uint32), ranks - above


def radix_thresholds(stream: Callable[[], Iterable], units: int, q) -> np.ndarray:
    """Exact thresholds by three radix passes over ``stream()``, an iterable of
    ``x`` ``[batch, ..., units]`` arrays or ``(x, valid)`` pairs, identical on
    every call. Returns ``[units]`` or ``[len(q), units]`` like ``Quantile.compute``."""
    levels, scalar = as_levels(q)
    update = jax.jit(lambda h, x, v: h.update(x, v))
    prefix, ranks = None, None
    for known, bits in RADIX_SCHEDULE:
        hist = RadixHistogram.empty(units, len(levels), known, bits, prefix)
        for item in stream():
            x, valid = item if isinstance(item, tuple) else (item, None)
            hist = update(hist, x, valid)
        if ranks is None:
            n = int(hist.count.to_numpy())
            ranks = np.tile(np.array([rank_for_level(v, n) for v in levels]), (units, 1))
        prefix, ranks = radix_refine(hist, ranks)
    out = key_to_float(prefix).T
    return out[0] if scalar else out
