"""The time the activation store saves a dissection past the one-pass budget: VGG-16
conv5_3 (random weights) over synthetic images, the radix path forced (``budget``
small), with the store off (every pass runs the model: four forwards of every image)
and on (one forward, ``runtime.activations``), beside the reference's two passes in
PyTorch (two forwards of every image) on the same CPU, in one run.

    python benchmarks/bench_store.py [--images 96] [--size 96]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from _vgg import vgg_setup  # noqa: E402
from accelerator import QUANTILE, SyntheticSource, torch_dissect  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    import jax

    from jaxdissect.experiments.dissect import dissect
    from jaxdissect.runtime import activations
    from jaxdissect.stats.upsample import Upsampler

    seg = args.size // 4
    tmodel, spec = vgg_setup(365, size=args.size)
    source = SyntheticSource(args.images, args.size, seg, 365)
    h = spec.activations(spec.params, np.zeros((1, args.size, args.size, 3), np.float32),
                         "conv5_3").shape[1]
    up = Upsampler.plain((h, h), (seg, seg))

    def compute(batch, p):
        return spec.activations(p, batch["image"], "conv5_3"), batch["seg"]

    print(f"VGG-16 conv5_3, {args.images} images at {args.size}, segmentation {seg}x{seg}, "
          f"radix path (budget 16); load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} cores", flush=True)
    times, results = {}, {}
    for choice in ("off", "host", "off", "host"):  # twice: the second with warm caches
        os.environ[activations.ENV] = choice
        t0 = time.perf_counter()
        results[choice] = dissect(compute, source, source.seg_labels, upsample=up,
                                  quantile=QUANTILE, batch_size=args.batch_size,
                                  params=spec.params, budget=16, progress=False,
                                  devices=jax.devices()[:1])
        times[choice] = time.perf_counter() - t0
        print(f"store {choice:4s}: {times[choice]:.1f} s", flush=True)
    same = all(np.array_equal(getattr(results["off"], f), getattr(results["host"], f))
               for f in ("thresholds", "iou", "topk_images"))
    _, _, t_torch = torch_dissect(tmodel, source, up.wy, up.wx, args.batch_size, "cpu")
    print(f"PyTorch reference, two passes: {t_torch:.1f} s")
    print(f"store saves {times['off'] - times['host']:.1f} s ({times['off'] / times['host']:.2f}x"
          f" faster); results identical: {same}; ratio PyTorch / jaxdissect: store off "
          f"{t_torch / times['off']:.2f}x, store on {t_torch / times['host']:.2f}x; load "
          f"average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
