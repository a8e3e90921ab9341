"""What a dissection adds to the model's own forward pass.

Full-size VGG-16 (random weights), images at 224x224, its conv5_3 (14x14x512):

* forward: the forward pass to conv5_3 alone, tallied by the same sweep driver
  (``runtime.sweep``) into a trivial statistic (a sum, so nothing is dropped);
* dissection: the whole one-pass ``dissect`` of the same images: the same
  forward, plain upsampling to a 56x56 segmentation (K = 2 layers, 60 labels,
  given with the images), ``TopLabels`` (exact thresholds at q = 0.01 and IoU
  counts), ``TopK`` (top images), and the host readout.

Both in one run, batches of 32 (``dissect``'s default), compilation excluded: each
is run once on one batch first with JAX's persistent compilation cache on (a
temporary folder), so the timed runs load their compiled steps instead of
compiling them (what remains per call, tracing and loading, is part of each
figure, as it is of a real call). Forward and dissection alternate for
``--repeats`` repeats, so both see the same load over time, and the medians count.
Prints wall-clock and process CPU times and ``overhead = dissection / forward -
1`` (medians; on a loaded machine the CPU time is the steadier measure). With
``--parts``, also the dissection's own work per batch on activations already
computed, each part timed interleaved with the others (CPU medians): the
upsampling alone, ``TopLabels.update`` with the upsampling fused into its
selection (as ``dissect`` runs it) and on the upsampled maps written out first
(the unfused path), ``TopK``, the data check, and the whole one-pass statistics step, on the
first batch (empty buffers: the floor estimate) and on a later one.

    python benchmarks/bench_overhead.py              # 64 images, 3 repeats
    python benchmarks/bench_overhead.py --images 32 --repeats 1 --parts
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdissect import taps
from jaxdissect.experiments.dissect import auto_budget, dissect
from jaxdissect.labels import LabelSet
from jaxdissect.models.vgg16 import VGG16, preprocess
from jaxdissect.runtime import sweep
from jaxdissect.stats import Upsampler
from jaxdissect.stats.checks import DataCheck
from jaxdissect.stats.topk import TopK, image_max
from jaxdissect.stats.toplabels import TopLabels, budget_for

LAYER = "conv5_3"
LABELS = LabelSet.from_pairs([(f"c{i}", "object") for i in range(1, 60)])


class Images:
    """``image`` ``[n, 224, 224, 3]`` in [0, 1] and ``seg`` ``[n, 2, 56, 56]``."""

    seg_labels = LABELS
    class_names = None

    def __init__(self, n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.num_examples = n
        self.image = rng.random((n, 224, 224, 3), dtype=np.float32)
        objects = np.kron(rng.integers(1, 30, (n, 8, 8)), np.ones((7, 7), int))
        materials = np.kron(rng.integers(30, 60, (n, 4, 4)), np.ones((14, 14), int))
        self.seg = np.stack([objects, materials], axis=1).astype(np.int32)

    def batch(self, start, stop):
        return {"image": self.image[start:stop], "seg": self.seg[start:stop]}

    def identity(self):
        return {"bench_overhead": self.num_examples}


@struct.dataclass
class Total:
    """A sum of every activation: the cheapest statistic that uses the forward."""

    value: jnp.ndarray

    def merge(self, other: "Total") -> "Total":
        return Total(self.value + other.value)


def conv5_3(params, images):
    """conv5_3 (post-ReLU) of images in [0, 1]; under jit the layers after it are
    compiled away, as only this tap is used."""
    _, acts = taps.run(VGG16().apply, {"params": params}, preprocess(images),
                       capture=(LAYER,))
    return acts[LAYER]


def forward_pass(source, params, batch):
    def step(total, b, p):
        valid = b["valid"].astype(jnp.float32)[:, None, None, None]
        return Total(total.value + jnp.sum(conv5_3(p, b["image"]) * valid))

    total = sweep.sweep(step, Total(jnp.zeros((), jnp.float32)), source, batch_size=batch,
                        replicated=(params,), progress=False)
    return float(total.value)


def dissection(source, params, batch, budget, dense=False):
    """``dissect`` as it runs by itself: ``budget`` is the one its ``auto_budget``
    picks for the timed run's size (passed so a smaller warm-up compiles the same
    step). ``dense``: the upsampler without its two-tap form."""
    up = Upsampler.plain((14, 14), (56, 56))
    if dense:
        up = Upsampler(up.wy, up.wx)
    return dissect(lambda b, p: (conv5_3(p, b["image"]), b["seg"]), source, LABELS,
                   upsample=up, quantile=0.01,
                   batch_size=batch, budget=budget, params=params, progress=False)


def timed(fn, *args):
    """``(out, wall seconds, CPU seconds of this process)``: on a shared, loaded
    machine the CPU time is the steadier measure of the work done."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - wall, time.process_time() - cpu


def interleaved(cases: dict, repeats: int) -> tuple[dict, dict]:
    """``({name: [(wall, cpu), ...]}, {name: last output})``: every case run once
    per repeat, in turn."""
    runs, outs = {name: [] for name in cases}, {}
    for _ in range(repeats):
        for name, (fn, args) in cases.items():
            outs[name], *times = timed(fn, *args)
            runs[name].append(tuple(times))
    return runs, outs


def median(runs, i: int) -> float:
    return float(np.median([r[i] for r in runs]))


def parts(source, params, batch, repeats):
    """The dissection's own work per batch on precomputed conv5_3 activations:
    CPU medians over ``repeats`` interleaved runs."""
    forward = jax.jit(conv5_3)
    acts = [forward(params, source.image[i:i + batch]) for i in (0, batch)]
    seg = [jnp.asarray(source.seg[i:i + batch]) for i in (0, batch)]
    index = [jnp.arange(i, i + batch, dtype=jnp.int32) for i in (0, batch)]
    valid = jnp.ones(batch, bool)
    up = Upsampler.plain((14, 14), (56, 56))
    n = source.num_examples * 56 * 56
    empty = TopLabels.empty(512, budget_for(0.01, n), len(LABELS), 2)
    images, check = TopK.empty(512, 20), DataCheck.empty()
    fused = jax.jit(lambda t, a, s, i: t.update(a, s, valid, i, up))
    unfused = jax.jit(lambda t, a, s, i: t.update(up(a), s, valid, i))

    @jax.jit
    def step(t, k, c, a, s, i):  # dissect's one-pass statistics, as in its step
        return (t.update(a, s, valid, i, up), k.update(image_max(a), i, valid),
                c.update(a, s, valid, i, len(LABELS)))

    full = fused(empty, acts[0], seg[0], index[0])
    cases = {"upsample": (jax.jit(up.__call__), (acts[1],)),
             "TopK.update": (jax.jit(lambda k, a, i: k.update(image_max(a), i, valid)),
                             (images, acts[1], index[1])),
             "DataCheck.update": (jax.jit(lambda c, a, s, i: c.update(
                 a, s, valid, i, len(LABELS))), (check, acts[1], seg[1], index[1]))}
    for name, state, b in (("first", empty, 0), ("later", full, 1)):
        cases[f"TopLabels fused, {name}"] = (fused, (state, acts[b], seg[b], index[b]))
        cases[f"TopLabels unfused, {name}"] = (unfused, (state, acts[b], seg[b], index[b]))
        cases[f"whole step, {name}"] = (step, (state, images, check, acts[b], seg[b],
                                               index[b]))
    for fn, args in cases.values():
        jax.block_until_ready(fn(*args))  # compile
    load = os.getloadavg()[0]
    runs, _ = interleaved(cases, repeats)
    print(f"per batch of {batch} on given activations, CPU medians of {repeats} "
          f"interleaved runs (load average {load:.1f} -> {os.getloadavg()[0]:.1f}); "
          "'first': empty buffers (floor estimate), 'later': full buffers:")
    for name, r in runs.items():
        print(f"  {name:26s}: CPU {median(r, 1) * 1e3:7.1f} ms, wall "
              f"{median(r, 0) * 1e3:7.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3,
                        help="forward / dissection runs, alternated (medians count)")
    parser.add_argument("--dense", action="store_true",
                        help="upsample with the dense interpolation matrices (as before the "
                             "two-tap blends), for comparison")
    parser.add_argument("--parts", action="store_true",
                        help="also time the dissection's steps apart")
    parser.add_argument("--parts-only", action="store_true",
                        help="only the steps apart (no forward / dissection runs)")
    parser.add_argument("--parts-repeats", type=int, default=7)
    args = parser.parse_args()
    if args.images < 2 * args.batch and (args.parts or args.parts_only):
        parser.error("--parts needs at least two batches of images")
    cache_dir = tempfile.mkdtemp(prefix="jaxdissect-bench-overhead-")
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    params = jax.jit(lambda k: VGG16().init(k, jnp.zeros((1, 224, 224, 3)))["params"])(
        jax.random.key(0))
    source = Images(args.images)
    if args.parts_only:
        return parts(source, params, args.batch, args.parts_repeats)
    warm = Images(args.batch, seed=1)
    n_values = args.images * 56 * 56
    budget = auto_budget((0.01,), n_values, 512, 2)
    assert budget == budget_for(0.01, n_values), "the timed run would not be one pass"
    # compile both steps once (cached on disk) on one batch
    forward_pass(warm, params, args.batch)
    dissection(warm, params, args.batch, budget, args.dense)

    load = os.getloadavg()
    runs, outs = interleaved({"forward alone": (forward_pass, (source, params, args.batch)),
                              "whole dissection": (dissection, (
                                  source, params, args.batch, budget, args.dense))},
                             args.repeats)
    result = outs["whole dissection"]
    end = os.getloadavg()
    print(f"VGG-16 {LAYER}, {args.images} images at 224x224, batch {args.batch}, "
          f"{jax.device_count()} JAX device(s), {os.cpu_count()} cores, load average "
          f"{load[0]:.1f} at the start, {end[0]:.1f} at the end"
          + (", dense einsum upsampling" if args.dense else ""))
    for name, r in runs.items():
        print(f"{name:17s}: wall " + ", ".join(f"{w:6.2f}s" for w, _ in r) + "; CPU "
              + ", ".join(f"{c:6.2f}s" for _, c in r))
    fw, fc = (median(runs["forward alone"], i) for i in (0, 1))
    dw, dc = (median(runs["whole dissection"], i) for i in (0, 1))
    print(f"overhead         : wall {dw / fw - 1:+.1%}, CPU {dc / fc - 1:+.1%} (median "
          f"dissection / median forward - 1; ratios {dw / fw:.3f}, {dc / fc:.3f}; "
          f"{int(result.labelled.sum())} units labelled on random weights)")
    if args.parts:
        parts(source, params, args.batch, args.parts_repeats)


if __name__ == "__main__":
    main()
