"""``merge_top`` of upsampled activation maps, without writing them out.

``merge_top_upsampled(top, acts, valid, upsample)`` is ``merge_top(top, rows)``
(``stats.select``) for ``rows = pixel_rows(upsample(acts), valid, -inf)``: each
unit's ``B`` largest upsampled values, ``src >= B`` naming the pixel row
``(image * H + y) * W + x`` of the upsampled batch. On CPU, when ``upsample`` is
an ``Upsampler`` with two-tap blends and the native kernels build, one kernel
(``cpu_kernels.cc``: ``top_merge.h`` over ``blend.h``'s rows) computes the
upsampled maps row by row as it scans them, with the arithmetic of
``Upsampler``'s own CPU kernel (so the same bits), and never materialises the
``[b, H, W, u]`` float32 array. For VGG-16's conv5_3 (14x14 -> 56x56, 512 units)
that array is 205 MB per batch of 32, which the step used to write and then
read back: most of the dissection's own time. Elsewhere (accelerators, a
custom ``upsample``, no compiler), the upsampled rows go through ``merge_top``.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jaxdissect.stats import kernels, native
from jaxdissect.stats.quantile import pixel_rows
from jaxdissect.stats.select import merge_top
from jaxdissect.stats.upsample import Upsampler, tap_arrays


def merge_top_upsampled(top: jnp.ndarray, acts: jnp.ndarray, valid: jnp.ndarray | None,
                        upsample: Callable[[jax.Array], jax.Array]
                        ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(values [u, B], src [u, B] int32)``: ``merge_top`` of the buffer ``top``
    ``[u, B]`` and the rows of ``upsample(acts)`` (``acts`` ``[b, h, w, u]``),
    padding images (``valid`` ``[b]`` False) left out."""
    def upsampled(top, acts, valid):
        rows, _ = pixel_rows(upsample(acts), valid, -jnp.inf)
        return merge_top(top, rows)

    target = native.target("top_merge_upsampled")
    if target is None or not isinstance(upsample, Upsampler) or upsample.taps is None:
        return upsampled(top, acts, valid)
    if valid is None:
        valid = jnp.ones(acts.shape[:1], bool)
    cpu = functools.partial(_native, target, upsample.taps)
    return kernels.platform_dependent(top.astype(jnp.float32), acts.astype(jnp.float32),
                                      valid, cpu=cpu, default=upsampled)


def _native(target: str, taps: tuple, top, acts, valid):
    shapes = (jax.ShapeDtypeStruct(top.shape, jnp.float32),
              jax.ShapeDtypeStruct(top.shape, jnp.int32))
    call = jax.ffi.ffi_call(target, shapes, vmap_method="sequential")
    values, src = call(top, acts, valid.astype(jnp.uint8), *tap_arrays(taps))
    return values, src
