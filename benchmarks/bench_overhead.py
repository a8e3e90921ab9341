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
temporary folder), so the timed run loads its compiled step instead of compiling
it. Forward and dissection alternate for ``--rounds`` rounds and the fastest of each
counts. Prints wall-clock and process CPU times and ``overhead = dissection /
forward - 1``; with
``--parts``, also the dissection's own work timed apart on activations already
computed (upsampling, ``TopLabels`` update, ``TopK`` update).

    python benchmarks/bench_overhead.py              # 64 images
    python benchmarks/bench_overhead.py --images 32 --parts
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
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def repeat(fn, args, times):
    for _ in range(times):
        jax.block_until_ready(fn(*args))


def parts(source, params, batch):
    """The dissection's own work per batch on precomputed conv5_3 activations."""
    acts = jax.jit(conv5_3)(params, source.image[:batch])
    seg = jnp.asarray(source.seg[:batch])
    up = Upsampler.plain((14, 14), (56, 56))
    n = source.num_examples * 56 * 56
    top = TopLabels.empty(512, budget_for(0.01, n), len(LABELS), 2)
    images = TopK.empty(512, 20)
    index = jnp.arange(batch, dtype=jnp.int32)
    steps = {
        "upsample": jax.jit(lambda a: up(a)),
        "TopLabels.update": jax.jit(lambda t, a, s: t.update(up(a), s)),
        "TopK.update": jax.jit(lambda k, a: k.update(image_max(a), index)),
    }
    argsets = {"upsample": (acts,), "TopLabels.update": (top, acts, seg),
               "TopK.update": (images, acts)}
    print(f"per batch of {batch} (TopLabels.update includes the upsampling):")
    for name, fn in steps.items():
        jax.block_until_ready(fn(*argsets[name]))
        _, wall, cpu = timed(repeat, fn, argsets[name], 3)
        print(f"  {name:17s}: wall {wall / 3:7.3f}s, CPU {cpu / 3:7.3f}s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2,
                        help="forward / dissection rounds, alternated (the fastest counts)")
    parser.add_argument("--dense", action="store_true",
                        help="upsample with the dense interpolation matrices (as before the "
                             "two-tap blends), for comparison")
    parser.add_argument("--parts", action="store_true",
                        help="also time the dissection's steps apart")
    args = parser.parse_args()
    cache_dir = tempfile.mkdtemp(prefix="jaxdissect-bench-overhead-")
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    params = jax.jit(lambda k: VGG16().init(k, jnp.zeros((1, 224, 224, 3)))["params"])(
        jax.random.key(0))
    source = Images(args.images)
    warm = Images(args.batch, seed=1)
    n_values = args.images * 56 * 56
    budget = auto_budget((0.01,), n_values, 512, 2)
    assert budget == budget_for(0.01, n_values), "the timed run would not be one pass"
    # compile both steps once (cached on disk) on one batch
    forward_pass(warm, params, args.batch)
    dissection(warm, params, args.batch, budget, args.dense)

    load = os.getloadavg()
    forward, dissected = [], []
    for _ in range(args.rounds):  # alternated, so both see the same load over time
        forward.append(timed(forward_pass, source, params, args.batch)[1:])
        result, *times = timed(dissection, source, params, args.batch, budget, args.dense)
        dissected.append(tuple(times))
    end = os.getloadavg()
    print(f"VGG-16 {LAYER}, {args.images} images at 224x224, batch {args.batch}, "
          f"{jax.device_count()} JAX device(s), {os.cpu_count()} cores, load average "
          f"{load[0]:.1f} at the start, {end[0]:.1f} at the end"
          + (", dense einsum upsampling" if args.dense else ""))
    for name, runs in (("forward alone", forward), ("whole dissection", dissected)):
        print(f"{name:17s}: wall " + ", ".join(f"{w:6.2f}s" for w, _ in runs) + "; CPU "
              + ", ".join(f"{c:6.2f}s" for _, c in runs))
    fw, fc = (min(r[i] for r in forward) for i in (0, 1))
    dw, dc = (min(r[i] for r in dissected) for i in (0, 1))
    print(f"overhead         : wall {dw / fw - 1:+.1%}, CPU {dc / fc - 1:+.1%} (fastest "
          f"dissection / fastest forward - 1; {int(result.labelled.sum())} units labelled "
          f"on random weights)")
    if args.parts:
        parts(source, params, args.batch)


if __name__ == "__main__":
    main()
