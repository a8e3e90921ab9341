"""Bilinear upsampling of activation maps onto the segmentation grid, keeping
receptive-field centres aligned (the reference's ``upsample.py`` semantics).

Per axis, a layer stack of ``(kernel, stride, padding[, dilation])`` maps a
feature pixel ``o`` back to input pixel ``o * scale + offset`` with
``scale = prod(stride)`` and ``offset`` accumulating ``(kernel - 1) * dilation / 2
- padding`` (``sequence_scale_offset``). With an ``image_size``, that map is
rescaled to the target grid by ``(target - 1) / (image - 1)``. Without a layer
stack (generators, or classifiers whose padding keeps centres aligned), target
pixel ``t`` samples source coordinate ``(t + 0.5) * data / target - 0.5``.

Sampling is bilinear with zero padding outside the source (as ``grid_sample``
with ``align_corners=True, padding_mode="zeros"`` on the reference's grid).
Bilinear sampling on a separable grid is two small matrices,
``out[b, y, x, u] = sum_ij Wy[y, i] Wx[x, j] acts[b, i, j, u]``, each with at most
two nonzero entries per row. ``Upsampler`` applies them as two-tap blends along
x then y (``w0 * a[i0] + w1 * a[i1]``, the matrices' own entries, a term with a
zero weight left out): about 4x less work than two dense einsums, which it falls
back to for matrices with more taps per row. A non-finite input makes NaN
exactly the outputs with a non-zero weight on it (not, through ``0 * NaN``, its
whole row and column).

On CPU the blends run in the native kernel (``blend.h``, where it builds): each
float32 product rounded before the sum, no fused multiply-add, so the values are
NumPy's ``a0 * w0 + a1 * w1`` bit for bit, whatever consumes them. That is what
lets ``stats.upsample_merge`` compute the same values inside its selection
kernel without writing them out. (XLA's own fusion contracts some of the
products into FMAs and not others, depending on the consumer.)
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdissect.stats import kernels, native

Pair = tuple[float, float]


def _per_axis(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected an int or a (y, x) pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _layer_configs(layers) -> list[tuple[tuple[int, int], ...]]:
    """Each layer as ((ky, kx), (sy, sx), (py, px), (dy, dx))."""
    out = []
    for layer in layers:
        if len(layer) not in (3, 4):
            raise ValueError(f"layer geometry must be (kernel, stride, padding[, dilation]), "
                             f"got {layer!r}")
        k, s, p = (_per_axis(v) for v in layer[:3])
        d = _per_axis(layer[3]) if len(layer) == 4 else (1, 1)
        if min(k + s + d) < 1 or min(p) < 0:
            raise ValueError(f"invalid layer geometry {layer!r}")
        out.append((k, s, p, d))
    return out


def sequence_scale_offset(layers: Sequence) -> tuple[Pair, Pair]:
    """``((yscale, yoffset), (xscale, xoffset))``: input = output * scale + offset,
    with pixel centres at integer coordinates, for layers listed input first."""
    result = []
    for axis in range(2):
        scale, offset = 1.0, 0.0
        for k, s, p, d in reversed(_layer_configs(layers)):
            scale, offset = scale * s[axis], offset * s[axis] + (k[axis] - 1) * d[axis] / 2 \
                - p[axis]
        result.append((scale, offset))
    return tuple(result)


def sequence_data_size(layers: Sequence, input_size: tuple[int, int]) -> tuple[int, int]:
    """Output ``(h, w)`` of the layer stack applied to an ``input_size`` image."""
    size = list(input_size)
    for k, s, p, d in _layer_configs(layers):
        for a in range(2):
            size[a] = 1 + (size[a] + 2 * p[a] - d[a] * (k[a] - 1) - 1) // s[a]
    if min(size) < 1:
        raise ValueError(f"layers reduce {input_size} to nothing ({size})")
    return tuple(size)


def source_coordinates(data_size: int, target_size: int, image_size: int | None = None,
                       scale_offset: Pair | None = None) -> np.ndarray:
    """For one axis, the source coordinate (pixel centres at 0, 1, ...) sampled by
    each of the ``target_size`` output pixels, ``[target_size]`` float64."""
    if scale_offset is None:
        scale = target_size / data_size
        offset = 0.5 * scale - 0.5
    else:
        scale, offset = scale_offset
        if image_size is not None:
            if image_size < 2:
                raise ValueError("image_size must be at least 2 to rescale the grid")
            scale = scale * (target_size - 1) / (image_size - 1)
            offset = offset * (target_size - 1) / (image_size - 1)
    t = np.arange(target_size, dtype=np.float64)
    if data_size == 1:
        return np.zeros(target_size)  # align_corners: a one-pixel source is one point
    return (t - offset) / scale


def interpolation_matrix(coords: np.ndarray, size: int) -> np.ndarray:
    """``[len(coords), size]`` bilinear weights with zero padding outside ``[0, size)``."""
    lo = np.floor(coords).astype(np.int64)
    frac = coords - lo
    w = np.zeros((len(coords), size), np.float64)
    rows = np.arange(len(coords))
    for idx, weight in ((lo, 1.0 - frac), (lo + 1, frac)):
        inside = (idx >= 0) & (idx < size)
        np.add.at(w, (rows[inside], idx[inside]), weight[inside])
    return w


@struct.dataclass
class Upsampler:
    """``acts`` ``[batch, h, w, units]`` -> ``[batch, H, W, units]``. ``wy`` ``[H, h]``,
    ``wx`` ``[W, w]`` float32 interpolation matrices."""

    wy: jnp.ndarray
    wx: jnp.ndarray
    #: per axis (y, x), ``(i0, i1, w0, w1)`` of each output row: the matrix's
    #: nonzero columns and entries (``None``: a row has more than two)
    taps: tuple | None = struct.field(pytree_node=False, default=None)

    @classmethod
    def create(cls, data_shape: tuple[int, int], target_shape: tuple[int, int],
               image_size: tuple[int, int] | None = None,
               scale_offset: tuple[Pair, Pair] | None = None) -> "Upsampler":
        """The reference's grid: plain when ``scale_offset`` is None, else the
        receptive-field map rescaled from ``image_size`` to ``target_shape``."""
        if len(data_shape) != 2 or len(target_shape) != 2 or min(*data_shape,
                                                                  *target_shape) < 1:
            raise ValueError(f"need positive (h, w) shapes, got data {data_shape}, "
                             f"target {target_shape}")
        mats = []
        for a in range(2):
            coords = source_coordinates(
                data_shape[a], target_shape[a],
                None if image_size is None else image_size[a],
                None if scale_offset is None else scale_offset[a])
            mats.append(interpolation_matrix(coords, data_shape[a]).astype(np.float32))
        taps = tuple(two_taps(m) for m in mats)
        return cls(*(jnp.asarray(m) for m in mats), taps=None if None in taps else taps)

    @classmethod
    def plain(cls, data_shape, target_shape) -> "Upsampler":
        """Stretch ``data_shape`` over ``target_shape`` (the reference's generator case)."""
        return cls.create(tuple(data_shape), tuple(target_shape))

    @classmethod
    def for_layers(cls, layers: Sequence, image_size: tuple[int, int],
                   target_shape: tuple[int, int],
                   data_shape: tuple[int, int] | None = None) -> "Upsampler":
        """Receptive-field aligned, from a model's ``layer_geometry(layer)`` list."""
        if data_shape is None:
            data_shape = sequence_data_size(layers, image_size)
        return cls.create(tuple(data_shape), tuple(target_shape), tuple(image_size),
                          sequence_scale_offset(layers))

    @property
    def data_shape(self) -> tuple[int, int]:
        return self.wy.shape[1], self.wx.shape[1]

    @property
    def target_shape(self) -> tuple[int, int]:
        return self.wy.shape[0], self.wx.shape[0]

    def __call__(self, acts: jnp.ndarray) -> jnp.ndarray:
        if acts.ndim != 4 or tuple(acts.shape[1:3]) != self.data_shape:
            raise ValueError(f"expected acts [batch, {self.data_shape[0]}, "
                             f"{self.data_shape[1]}, units], got {acts.shape}")
        acts = acts.astype(jnp.float32)
        if self.taps is not None:
            return two_tap_upsample(acts, self.taps)
        finite = jnp.isfinite(acts)
        # NaN * 0 is NaN: a non-finite value would spread over its whole row and column
        # of the output through the dense matrices' zero weights. Only when there is
        # one (the cond runs one branch), interpolate the finite values and mark NaN
        # exactly the outputs with a non-zero weight on a non-finite input.
        return jax.lax.cond(finite.all(), self._interpolate,
                            lambda a: self._interpolate_masked(a, finite), acts)

    def _interpolate(self, acts):
        x = jnp.einsum("xj,bijc->bixc", self.wx, acts)
        return jnp.einsum("yi,bixc->byxc", self.wy, x)

    def _interpolate_masked(self, acts, finite):
        out = self._interpolate(jnp.where(finite, acts, 0.0))
        touch = Upsampler((self.wy != 0).astype(jnp.float32), (self.wx != 0).astype(
            jnp.float32))._interpolate((~finite).astype(jnp.float32))
        return jnp.where(touch > 0, jnp.nan, out)


def two_taps(matrix: np.ndarray) -> tuple | None:
    """``(i0, i1, w0, w1)`` tuples, one entry per row of ``matrix`` ``[out, in]``:
    its nonzero columns and their entries (``i1 = i0``, ``w1 = 0`` for one; ``0, 0,
    0, 0`` for none), or ``None`` if a row has more than two nonzeros."""
    rows = []
    for r in np.asarray(matrix, np.float32):
        nz = np.flatnonzero(r)
        if len(nz) > 2:
            return None
        cols = [int(c) for c in nz] + [int(nz[0]) if len(nz) else 0] * (2 - len(nz))
        weights = [float(r[c]) for c in nz] + [0.0] * (2 - len(nz))
        rows.append((*cols, *weights))
    return tuple(tuple(col) for col in zip(*rows))


def _blend(x: jnp.ndarray, taps: tuple, axis: int) -> jnp.ndarray:
    """``w0[t] * x[.., i0[t], ..] + w1[t] * x[.., i1[t], ..]`` along ``axis``, a term
    with a zero weight left out (so a NaN input reaches only the outputs that weigh
    it)."""
    i0, i1, w0, w1 = (np.asarray(v) for v in taps)
    shape = [1] * x.ndim
    shape[axis] = -1
    out = []
    for i, w in ((i0, w0), (i1, w1)):
        w = np.asarray(w, np.float32).reshape(shape)
        out.append(jnp.where(w != 0, jnp.take(x, i, axis=axis) * w, 0.0))
    return out[0] + out[1]


def tap_arrays(taps: tuple) -> tuple[np.ndarray, ...]:
    """``(y index, y weight, x index, x weight)``: per axis, ``[2, size]`` int32
    columns ``(i0, i1)`` and float32 weights ``(w0, w1)`` (the native kernels'
    operands)."""
    out = []
    for i0, i1, w0, w1 in taps:
        out += [np.array([i0, i1], np.int32), np.array([w0, w1], np.float32)]
    return tuple(out)


def _blends(acts: jnp.ndarray, taps: tuple) -> jnp.ndarray:
    return _blend(_blend(acts, taps[1], 2), taps[0], 1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def two_tap_upsample(acts: jnp.ndarray, taps: tuple) -> jnp.ndarray:
    """``acts`` ``[b, h, w, u]`` float32 -> ``[b, H, W, u]`` by ``taps`` (an
    ``Upsampler``'s), non-finite inputs read as NaN; on CPU by the native kernel
    where it builds, else by XLA (the blends skip zero weights, so a NaN reaches
    exactly the outputs that weigh it, with no cond: a branch would copy the
    whole output)."""
    def xla(a):
        return _blends(jnp.where(jnp.isfinite(a), a, jnp.nan), taps)

    target = native.target("upsample")
    if target is None:
        return xla(acts)
    return kernels.platform_dependent(
        acts, cpu=functools.partial(_native_upsample, target, taps), default=xla)


@two_tap_upsample.defjvp
def _two_tap_jvp(taps, primals, tangents):
    # linear: the tangent goes through the same blends (in XLA, so it transposes)
    return two_tap_upsample(primals[0], taps), _blends(tangents[0], taps)


def _native_upsample(target: str, taps: tuple, acts: jnp.ndarray) -> jnp.ndarray:
    yi, yw, xi, xw = tap_arrays(taps)
    shape = acts.shape[:-3] + (yi.shape[1], xi.shape[1], acts.shape[-1])
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.float32),
                            vmap_method="sequential")
    return call(acts, yi, yw, xi, xw)
