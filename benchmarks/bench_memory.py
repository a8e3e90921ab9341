"""Peak memory of a dissection when the number of images grows 10x.

Each size runs in a fresh subprocess: ``dissect`` over a synthetic source that
makes every batch on the fly (activations ``[b, 14, 14, U]`` upsampled to 56x56,
a K=2 segmentation with 60 labels), then reports its peak resident set size
(``resource.getrusage(...).ru_maxrss``). The statistics have fixed shapes (a
per-unit value buffer, or radix-select histograms once ``ceil(q n)`` exceeds the
buffer; top-k images; ``[units, labels]`` counts), so the peak should not grow
with the number of images.

    python benchmarks/bench_memory.py                 # 48 vs 480 images, 256 units
    python benchmarks/bench_memory.py --budget 512     # radix select at both sizes
    python benchmarks/bench_memory.py --budget 16384   # one-pass buffer at both sizes

With the default budget the two sizes take different quantile paths (one-pass buffer
at N, radix select at 10N), so that comparison includes the switch.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(images: int, units: int, batch: int, budget: int) -> None:
    import numpy as np

    from jaxdissect.experiments.dissect import dissect
    from jaxdissect.labels import LabelSet
    from jaxdissect.stats import Upsampler

    class Synthetic:
        seg_labels = None
        class_names = None
        num_examples = images

        def batch(self, start, stop):
            acts, seg = [], []
            for i in range(start, stop):
                rng = np.random.default_rng(i)
                acts.append(rng.gamma(1.0, 1.0, (14, 14, units)).astype(np.float32))
                seg.append(np.stack([np.kron(rng.integers(1, 30, (8, 8)), np.ones((7, 7), int)),
                                     np.kron(rng.integers(30, 60, (4, 4)),
                                             np.ones((14, 14), int))]))
            return {"acts": np.stack(acts), "seg": np.stack(seg).astype(np.int32)}

    labels = LabelSet.from_pairs([(f"c{i}", "object") for i in range(1, 60)])
    start = time.perf_counter()
    result = dissect(lambda b: (b["acts"], b["seg"]), Synthetic(), labels,
                     upsample=Upsampler.plain((14, 14), (56, 56)), batch_size=batch,
                     budget=budget, progress=False)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"images": images, "peak_mib": peak_kib / 1024,
                      "seconds": time.perf_counter() - start,
                      "labelled": int(result.labelled.sum())}))


def main() -> None:
    from jaxdissect.stats import rank_for_level

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--budget", type=int, default=4096,
                        help="values kept per unit by the one-pass quantile; beyond "
                             "ceil(q n) > budget the radix passes run instead")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.units, args.batch, args.budget)
        return
    rows = []
    for images in (args.images, 10 * args.images):
        out = subprocess.run([sys.executable, __file__, "--child", str(images), "--units",
                              str(args.units), "--batch", str(args.batch),
                              "--budget", str(args.budget)],
                             check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        n = rows[-1]["images"] * 56 * 56
        path = "top-B buffer" if rank_for_level(0.01, n) <= args.budget else "radix select"
        print(f"{rows[-1]['images']:6d} images: peak RSS {rows[-1]['peak_mib']:8.1f} MiB "
              f"({rows[-1]['seconds']:.1f}s, quantile by {path}, budget {args.budget})")
    growth = rows[1]["peak_mib"] / rows[0]["peak_mib"] - 1
    print(f"peak memory growth for 10x images: {100 * growth:+.1f}% (target within 10%)")


if __name__ == "__main__":
    main()
