"""Exact per-unit top-B selection: merge a buffer of values with a new batch.

``merge_top(top, new)`` takes each unit's buffer ``top`` ``[u, B]`` (any order,
``-inf`` for empty slots) and a batch ``new`` ``[n, u]`` (pixels by units, the
layout activations arrive in) and returns the ``B`` largest of their union per
unit, with ``src`` ``[u, B]`` int32 saying where each came from: ``src < B`` is
the buffer's column ``src``, ``src >= B`` is ``new``'s row ``src - B``. The
result is exact as a multiset of values; among equal values at the boundary,
which copy is kept is unspecified (and differs between the two kernels).

Kernels, picked by ``jax.lax.platform_dependent`` when the step is lowered (the
accelerators' everywhere under ``JAXDISSECT_KERNELS=xla``, see ``stats.kernels``):

* accelerators: ``lax.top_k`` over ``[top | new.T]``;
* CPU: XLA:CPU's ``TopK`` is a heap partial sort, ``O(n log B)`` per unit with an
  indirect comparison per step (it dominated a dissection pass). So on CPU:
  a floor ``f_u`` with at least ``B`` values of the union above it (the buffer's
  minimum once it is full, or an estimate from a sample of the pixels, verified by
  counting) discards everything at or below it, and only the survivors, a few
  percent, go through a linear-time selection. A floor that fails the count is
  dropped for that unit, so the result never depends on the estimate, only the
  speed does. Two implementations of that algorithm:

  - ``cpu_kernels.cc``, an XLA FFI kernel compiled on first use
    (``stats.native``): one row-major scan of the batch, ``nth_element`` per unit;
  - ``host_merge`` in NumPy, when the native kernel cannot be built: a primitive
    whose CPU lowering is a Python callback (XLA hands it a copy of the batch).

On a mesh of several CPU devices (``--xla_force_host_platform_device_count``)
``jaxdissect.runtime.devices`` traces with ``device_kernel_only()``, so that each device
uses ``lax.top_k``; see there.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import math

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
from jax.interpreters import batching, mlir

from jaxdissect.stats import kernels, native

#: every ``_STRIDE``-th pixel estimates the floor of a buffer that is not yet full
_STRIDE = 8


def merge_top(top: jnp.ndarray, new: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(values [u, B], src [u, B] int32)``: each unit's ``B`` largest of the
    buffer ``top`` ``[u, B]`` and the batch ``new`` ``[n, u]``; see the module
    docstring. Values must not be NaN."""
    if top.ndim != 2 or new.ndim != 2 or new.shape[1] != top.shape[0]:
        raise ValueError(f"merge_top needs top [u, B] and new [n, u], got {top.shape} "
                         f"and {new.shape}")
    top, new = top.astype(jnp.float32), new.astype(jnp.float32)
    return kernels.platform_dependent(top, new, cpu=_cpu_kernel(), default=xla_merge)


def _cpu_kernel():
    """The native kernel if it builds, else the NumPy host kernel (unless Python
    callbacks are off, see ``device_kernel_only``), else ``lax.top_k``."""
    target = native.target("top_merge")
    if target is not None:
        return functools.partial(native_merge, target)
    if _HOST_KERNEL.get():
        return _cpu_merge
    return xla_merge


def native_merge(target: str, top: jnp.ndarray, new: jnp.ndarray):
    """``merge_top`` by the compiled FFI kernel ``target`` (``stats/cpu_kernels.cc``)."""
    shapes = (jax.ShapeDtypeStruct(top.shape, jnp.float32),
              jax.ShapeDtypeStruct(top.shape, jnp.int32))
    values, src = jax.ffi.ffi_call(target, shapes, vmap_method="sequential")(top, new)
    return values, src


_HOST_KERNEL = contextvars.ContextVar("jaxdissect_host_kernel", default=True)


@contextlib.contextmanager
def device_kernel_only():
    """Within this context ``merge_top`` never traces to the NumPy host kernel (a
    Python callback): it uses the native kernel or ``lax.top_k``.

    ``jaxdissect.runtime.devices`` traces its steps in it when several CPU devices share
    a step: each device would run a Python callback on one of the runtime's
    threads, and such callbacks were seen to wait on each other for good."""
    token = _HOST_KERNEL.set(False)
    try:
        yield
    finally:
        _HOST_KERNEL.reset(token)


def xla_merge(top: jnp.ndarray, new: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The accelerator kernel: one ``lax.top_k`` over ``[top | new.T]``."""
    values, src = jax.lax.top_k(jnp.concatenate([top, new.T], axis=1), top.shape[1])
    return values, src.astype(jnp.int32)


def _cpu_merge(top: jnp.ndarray, new: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    values, src = _host_merge_p.bind(top, new)
    return values, src


# A primitive whose CPU lowering calls ``host_merge`` on the operand buffers as
# NumPy arrays. ``jax.pure_callback`` would first copy every operand onto a CPU
# device (a copy of the whole batch per step, and a wait on the runtime's threads).
_host_merge_p = jex.core.Primitive("jaxdissect_host_merge")
_host_merge_p.multiple_results = True


@_host_merge_p.def_abstract_eval
def _host_merge_abstract(top, new):
    return (jax.core.ShapedArray(top.shape, jnp.float32),
            jax.core.ShapedArray(top.shape, jnp.int32))


@_host_merge_p.def_impl
def _host_merge_eager(top, new):
    return tuple(jnp.asarray(a) for a in host_merge(np.asarray(top), np.asarray(new)))


def _host_merge_lowering(ctx, top, new):
    def callback(t, x):
        return host_merge(t, x)

    results, _, _ = mlir.emit_python_callback(
        ctx, callback, None, [top, new], ctx.avals_in, ctx.avals_out,
        has_side_effect=False, returns_token=False)
    return results


def _host_merge_batched(args, dims):
    top, new = (jnp.moveaxis(a, d, 0) if d is not None else None for a, d in zip(args, dims))
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    top = jnp.broadcast_to(args[0], (size,) + args[0].shape) if top is None else top
    new = jnp.broadcast_to(args[1], (size,) + args[1].shape) if new is None else new
    out = jax.lax.map(lambda tn: tuple(_host_merge_p.bind(*tn)), (top, new))
    return out, (0, 0)


mlir.register_lowering(_host_merge_p, _host_merge_lowering, platform="cpu")
batching.primitive_batchers[_host_merge_p] = _host_merge_batched


def host_merge(top, new) -> tuple[np.ndarray, np.ndarray]:
    """The CPU kernel in NumPy (also callable directly): same contract as
    ``merge_top``. (Splitting units over threads measured no faster: the kernel
    is bound by memory traffic.)"""
    top = np.asarray(top, np.float32)
    new = np.ascontiguousarray(new, np.float32)
    values, src = _merge_units(top, new, 0, top.shape[0])
    _release_freed_memory()
    return values, src


def _release_freed_memory() -> None:
    """Returns the freed temporaries to the OS (glibc ``malloc_trim``). Without it,
    glibc's adaptive mmap threshold keeps the varying-size temporaries of every
    step in the heap, and the peak memory of a long pass creeps up (+20% over 10x
    more images in ``benchmarks/bench_memory.py``)."""
    if _LIBC:
        _LIBC[0].malloc_trim(0)


def _load_libc() -> list:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return [libc]
    except (OSError, AttributeError):  # not glibc: nothing to do
        return []


_LIBC = _load_libc()


def _merge_units(top: np.ndarray, new: np.ndarray, first: int,
                 stop: int) -> tuple[np.ndarray, np.ndarray]:
    """``host_merge`` for units ``first:stop`` (``top`` is their slice, ``new`` the
    whole C-contiguous batch)."""
    units, budget = top.shape
    survive = _survivors(top, new[:, first:stop])  # [n, units]: new values above the floor
    pos, unit = np.divmod(np.flatnonzero(survive), units)
    order = np.argsort(unit.astype(np.int16 if units < 1 << 15 else np.int32), kind="stable")
    pos, unit = pos[order], unit[order]
    vals = np.take(new.reshape(-1), pos * new.shape[1] + (unit + first))
    pos = pos.astype(np.int32) + budget
    per_unit = np.bincount(unit, minlength=units)
    bounds = np.concatenate([[0], np.cumsum(per_unit)])
    out_v = np.empty((units, budget), np.float32)
    out_s = np.empty((units, budget), np.int32)
    own = np.arange(budget, dtype=np.int32)
    # One padded argpartition for every unit whose real candidates (finite buffer
    # values and survivors, never -inf) number at least B and at most 3B: padding
    # is -inf, below every real candidate, so it is never kept.
    finite = np.count_nonzero(top > -np.inf, axis=1)
    vector = (per_unit <= 2 * budget) & (finite + per_unit >= budget)
    rows = np.flatnonzero(vector)
    if len(rows):
        width = int(per_unit[rows].max())
        row_of = np.full(units, -1)
        row_of[rows] = np.arange(len(rows))
        take = np.flatnonzero(row_of[unit] >= 0)
        # flat slot of each survivor: its row, after the buffer, in arrival order
        at = row_of[unit[take]] * (budget + width) + budget + (take - bounds[unit[take]])
        cand_v = np.full((len(rows), budget + width), -np.inf, np.float32)
        cand_s = np.zeros((len(rows), budget + width), np.int32)
        cand_v[:, :budget], cand_s[:, :budget] = top[rows], own
        np.put(cand_v, at, vals[take])
        np.put(cand_s, at, pos[take])
        keep = np.argpartition(cand_v, width, axis=1)[:, width:]
        out_v[rows] = np.take_along_axis(cand_v, keep, 1)
        out_s[rows] = np.take_along_axis(cand_s, keep, 1)
    for j in np.flatnonzero(~vector):
        a, b = bounds[j], bounds[j + 1]
        cand_v = np.concatenate([top[j], vals[a:b]])
        cand_s = np.concatenate([own, pos[a:b]])
        keep = np.argpartition(cand_v, len(cand_v) - budget)[len(cand_v) - budget:]
        out_v[j], out_s[j] = cand_v[keep], cand_s[keep]
    return out_v, out_s


def _survivors(top: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``[n, u]`` bool: the values of ``new`` above a floor ``f_u`` that has at least
    ``B`` values of the union strictly above it, or at or above it in the buffer,
    so every one of the ``B`` largest is a buffer value or a survivor."""
    units, budget = top.shape
    floor = top.min(axis=1)  # the buffer's B-th largest: B values at or above it
    open_ = ~(floor > -np.inf)
    sample = new[::_STRIDE]
    rank = math.ceil(1.25 * budget / _STRIDE) + 16
    if not open_.any() or len(sample) < rank:
        return new > floor[None, :]
    idx = np.flatnonzero(open_)
    every = len(idx) == units  # no copy of the batch while no buffer is full
    part = np.ascontiguousarray((sample if every else sample[:, idx]).T)  # [open, n/stride]
    floor[idx] = np.partition(part, part.shape[1] - rank, axis=1)[:, part.shape[1] - rank]
    survive = new > floor[None, :]
    above = survive.view(np.uint8).sum(axis=0, dtype=np.int64)[idx] + np.count_nonzero(
        top[idx] > floor[idx, None], axis=1)
    failed = idx[above < budget]  # the estimate was too high: keep every value
    if len(failed):
        survive[:, failed] = new[:, failed] > -np.inf
    return survive
