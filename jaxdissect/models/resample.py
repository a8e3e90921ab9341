"""Resampling of NHWC feature maps as fixed linear maps, matching PyTorch exactly.

Each operator is separable: a ``[out, in]`` matrix per spatial axis, built in
NumPy (float64, then cast) from the static shapes, applied with one einsum.

* :func:`bilinear_resize`: ``F.interpolate(mode="bilinear", align_corners=False)``
  (no antialiasing; half-pixel centres; source index clamped at 0 and n-1).
* :func:`adaptive_avg_pool`: ``nn.AdaptiveAvgPool2d`` (bin ``i`` of ``n -> m``
  averages inputs ``floor(i*n/m) .. ceil((i+1)*n/m) - 1``; also for ``m > n``).
* :func:`precise_roi_pool`: Precise RoI Pooling (Jiang et al. 2018) of the whole
  map into ``s x s`` bins, as the reference's unified-parsing PPM uses it: the
  feature is the continuous bilinear interpolant of the samples at integer
  positions (zero beyond the last sample), and each bin output is its exact
  integral over the bin divided by the bin area. The RoI is ``[0, n]`` on each axis.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` weights of PyTorch bilinear resizing (align_corners=False)."""
    a = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    for i in range(n_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        a[i, i0] += 1.0 - lam
        a[i, i1] += lam
    return a


@functools.lru_cache(maxsize=None)
def adaptive_avg_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` weights of PyTorch adaptive average pooling."""
    a = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a


def _triangle_cdf(u: np.ndarray) -> np.ndarray:
    """Integral of the hat function ``max(0, 1 - |t|)`` from -inf to ``u``."""
    u = np.clip(u, -1.0, 1.0)
    return np.where(u < 0, 0.5 * (u + 1) ** 2, 1.0 - 0.5 * (1 - u) ** 2)


@functools.lru_cache(maxsize=None)
def prroi_matrix(n_in: int, n_bins: int) -> np.ndarray:
    """``[n_bins, n_in]`` weights of Precise RoI Pooling over the RoI ``[0, n_in]``.

    Sample ``j`` contributes the integral of its hat function ``max(0, 1-|t-j|)``
    over bin ``[p*w, (p+1)*w]`` (``w = n_in / n_bins``), divided by ``w``.
    """
    width = n_in / n_bins
    lo = np.arange(n_bins)[:, None] * width
    hi = lo + width
    j = np.arange(n_in)[None, :]
    return (_triangle_cdf(hi - j) - _triangle_cdf(lo - j)) / width


def _apply(x: jnp.ndarray, mh: np.ndarray, mw: np.ndarray) -> jnp.ndarray:
    mh = jnp.asarray(mh, x.dtype)
    mw = jnp.asarray(mw, x.dtype)
    return jnp.einsum("ph,qw,bhwc->bpqc", mh, mw, x)


def bilinear_resize(x: jnp.ndarray, out_hw: tuple[int, int]) -> jnp.ndarray:
    """``[b, h, w, c] -> [b, oh, ow, c]``, PyTorch bilinear, align_corners=False."""
    h, w = x.shape[1:3]
    if (h, w) == tuple(out_hw):
        return x  # PyTorch's same-size bilinear resize is the identity
    return _apply(x, bilinear_matrix(h, out_hw[0]), bilinear_matrix(w, out_hw[1]))


def adaptive_avg_pool(x: jnp.ndarray, out_hw: tuple[int, int]) -> jnp.ndarray:
    """``[b, h, w, c] -> [b, oh, ow, c]``, PyTorch ``AdaptiveAvgPool2d``."""
    h, w = x.shape[1:3]
    if (h, w) == tuple(out_hw):
        return x
    return _apply(x, adaptive_avg_matrix(h, out_hw[0]), adaptive_avg_matrix(w, out_hw[1]))


def precise_roi_pool(x: jnp.ndarray, bins: int) -> jnp.ndarray:
    """``[b, h, w, c] -> [b, bins, bins, c]``: whole-map Precise RoI Pooling."""
    h, w = x.shape[1:3]
    return _apply(x, prroi_matrix(h, bins), prroi_matrix(w, bins))
