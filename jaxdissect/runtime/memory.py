"""Device memory of a dissection's steps: measured from XLA's compiled programs,
stated as bounds, and the largest batch that fits a device.

Per device and step, with ``b`` images in the device's share of a batch, the layer's
map ``h x w`` with ``u`` units, the segmentation grid ``Hs x Ws`` with ``K`` layers,
``n = b Hs Ws`` pixels, ``L`` labels, and (one pass) ``B`` values kept per unit,
every step takes its inputs (the model's, the statistic) plus these temporaries,
on the accelerators' (XLA) kernels (``stats.kernels``), as ``step_bound`` states
and the suite checks against XLA's own accounting of the compiled steps
(``compiled_bytes``):

  =======  ===============================================================
  step     temporaries (bytes, at most)
  =======  ===============================================================
  onepass  16 n u + 4 u B (K + 5) + 4 b h w u + 4 n K
  radix    12 n u + 2^15 u levels + 4 b h w u
  iou      20 n u + 8 n K + 8 u (L + 1) K + 4 b h w u
  =======  ===============================================================

measured by XLA:CPU at 0.05-0.65 (one pass), 0.3-0.5 (radix) and 0.7-0.85 (IoU) of
these bounds over the shapes the suite tries (``n u``, the upsampled activations, is
the term that grows: 2 to 5 float32 copies of them in flight). The statistics' own
state (``4 u B (K + 2)`` bytes for the one pass, ``8 u levels 2^11`` for a radix
pass, ``8 u (L + 1)`` for the IoU tally) is an input and an output of every step.
The model's forward adds its own activations, which ``auto_batch_size`` measures
rather than states: it compiles the forward (with the upsampling) at two batch
sizes, takes the growth per image, adds the largest step bound and picks the
largest batch whose total fits ``fraction`` of the device's memory
(``bytes_limit``; on a CPU, the host's available memory).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np


def step_bound(step: str, *, batch: int, layer_hw: tuple[int, int], units: int,
               grid: tuple[int, int], layers: int, labels: int, budget: int = 0,
               levels: int = 1) -> int:
    """The stated bound (module table) on a step's temporaries, in bytes."""
    n = batch * grid[0] * grid[1]
    acts = 4 * batch * layer_hw[0] * layer_hw[1] * units
    if step == "onepass":
        return 16 * n * units + 4 * units * budget * (layers + 5) + acts + 4 * n * layers
    if step == "radix":
        return 12 * n * units + (1 << 15) * units * levels + acts
    if step == "iou":
        return 20 * n * units + 8 * n * layers + 8 * units * (labels + 1) * layers + acts
    raise ValueError(f"no step {step!r}; steps: onepass, radix, iou")


def compiled_bytes(fn: Callable, *args) -> dict[str, int]:
    """XLA's accounting of ``jax.jit(fn)(*args)`` compiled for the default device:
    ``arguments``, ``outputs``, ``temporaries`` and ``total`` (their sum less the
    outputs that alias arguments), in bytes."""
    stats = jax.jit(fn).lower(*args).compile().memory_analysis()
    if stats is None:
        raise RuntimeError("this platform reports no compiled memory analysis")
    out = {"arguments": int(stats.argument_size_in_bytes),
           "outputs": int(stats.output_size_in_bytes),
           "temporaries": int(stats.temp_size_in_bytes)}
    out["total"] = (out["arguments"] + out["outputs"] + out["temporaries"]
                    - int(stats.alias_size_in_bytes))
    return out


def device_memory(device: jax.Device | None = None) -> int | None:
    """The memory a device offers (``memory_stats()["bytes_limit"]``); on a CPU, the
    host's available memory; None if unknown."""
    device = device or jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    if device.platform == "cpu":
        from jaxdissect.runtime.activations import available_memory
        return available_memory() or None
    return None


def auto_batch_size(forward_bytes: Callable[[int], int], step_bytes: Callable[[int], int],
                    limit: int, fraction: float = 0.7, multiple: int = 1,
                    largest: int = 1024) -> int:
    """The largest batch ``b`` (a multiple of ``multiple``, at most ``largest``, at
    least ``multiple``) with ``forward(b) + step(b) <= fraction * limit``, the
    forward's memory taken as linear in ``b`` from ``forward_bytes`` at ``multiple``
    and ``2 multiple`` images, ``step_bytes(b)`` a stated bound."""
    if limit <= 0 or not 0 < fraction <= 1:
        raise ValueError(f"need a positive memory limit and fraction, got {limit}, {fraction}")
    m = max(1, int(multiple))
    f1, f2 = forward_bytes(m), forward_bytes(2 * m)
    per = max(f2 - f1, 1) / m
    fixed = f1 - per * m

    def total(b):
        return fixed + per * b + step_bytes(b)

    budget = fraction * limit
    best = m
    b = m
    while b <= largest and total(b) <= budget:
        best, b = b, b * 2
    # refine between best and 2 best in steps of m
    step = max(m, best // 8 // m * m)
    b = best + step
    while b <= min(largest, 2 * best) and total(b) <= budget:
        best, b = b, b + step
    return best


def forward_memory(fn: Callable[[dict, Any], Any], example: dict[str, np.ndarray],
                   params: Any) -> Callable[[int], int]:
    """``b -> compiled_bytes(fn)(batch of b, params)["total"]``, the batch made by
    repeating ``example``'s first image."""
    def at(b: int) -> int:
        batch = {k: np.repeat(np.asarray(v)[:1], b, axis=0) for k, v in example.items()}
        return compiled_bytes(fn, batch, params)["total"]
    return at


def dissect_batch_size(call: Callable[[dict, Any], tuple], source, num_labels: int, *,
                       params: Any = None, upsample: Callable | None = None,
                       budget: int | None = None, levels=(0.01,), devices=None,
                       fraction: float = 0.7, largest: int = 1024) -> int:
    """``--batch-size auto`` for ``experiments.dissect.dissect``: the largest batch
    (over all local devices) whose per-device share fits ``fraction`` of the first
    device's memory with the model's forward (measured) and the largest of the
    dissection's steps (``step_bound``); ``call(batch, params) -> (acts, seg)``."""
    from jaxdissect.experiments.dissect import auto_budget
    from jaxdissect.runtime import devices as sharding
    from jaxdissect.runtime import sweep
    from jaxdissect.stats.quantile import rank_for_level
    from jaxdissect.stats.upsample import Upsampler

    devs = sharding.local_devices(devices)
    limit = device_memory(devs[0])
    if limit is None:
        raise ValueError("this device reports no memory size: pass a batch size")
    example = {k: v for k, v in sweep.first_batch(source, 1, devs[:1]).items()
               if k != "valid"}
    acts, seg = jax.eval_shape(call, example, params)
    _, h, w, units = acts.shape
    layers, grid = int(seg.shape[1]), tuple(seg.shape[2:])
    if upsample is None:
        upsample = (lambda a: a) if (h, w) == grid else Upsampler.plain((h, w), grid)
    n_values = source.num_examples * grid[0] * grid[1]
    if budget is None:
        budget = auto_budget(levels, n_values, units, layers)
    one_pass = max(rank_for_level(q, n_values) for q in levels) <= budget

    def forward(batch, p):
        a, s = call(batch, p)
        return upsample(a), s

    def steps(b):
        shape = dict(batch=b, layer_hw=(h, w), units=units, grid=grid, layers=layers,
                     labels=num_labels, budget=budget, levels=len(levels))
        if one_pass:
            return step_bound("onepass", **shape)
        return max(step_bound("radix", **shape), step_bound("iou", **shape))

    start, stop = sweep.process_slice(source.num_examples)
    largest = max(1, min(largest, -(-(stop - start) // len(devs))))  # no step of padding
    per_device = auto_batch_size(forward_memory(forward, example, params), steps, limit,
                                 fraction=fraction, largest=largest)
    return per_device * len(devs)
