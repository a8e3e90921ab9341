"""Runs small dissections, an ablation and an intervention with whatever kernels
``JAXDISSECT_KERNELS`` selects, writing everything under ``argv[1]``; the test runs it
once per kernel choice and compares (``test_kernels_xla.py``)."""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from jaxdissect import cli  # noqa: E402
from jaxdissect.experiments.dissect import dissect  # noqa: E402
from jaxdissect.stats import kernels  # noqa: E402
from tests.experiments.test_dissect import LABELS, UP, ArraySource, compute  # noqa: E402


def library_runs(out):
    """Continuous random activations (no ties): the one pass and the radix passes,
    with the identity upsampling (the statistics see identical float inputs) and with
    a receptive-field upsampling."""
    rng = np.random.default_rng(0)
    n = 20
    acts = rng.standard_normal((n, 12, 12, 6)).astype(np.float32)
    seg = rng.choice(5, size=(n, 2, 12, 12)).astype(np.int32)
    source = ArraySource(acts=acts, seg=seg)
    for name, up in (("identity", None), ("upsampled", UP)):
        src = source if up is None else ArraySource(acts=acts[:, :6, :6], seg=seg)
        for path, budget in (("onepass", None), ("radix", 16)):
            r = dissect(compute, src, LABELS, upsample=up, quantile=0.03, levels=(0.01,),
                        batch_size=6, topk=3, budget=budget, progress=False)
            r.save(os.path.join(out, f"lib-{name}-{path}.npz"))


def main(out):
    os.makedirs(out, exist_ok=True)
    library_runs(out)
    common = ["--batch-size", "8", "--no-progress", "--force"]
    runs = [["dissect", "--model", "world", "--num-images", "24", "--out",
             os.path.join(out, "dissect")],
            ["ablate", "--model", "world", "--num-images", "16", "--train-images", "16",
             "--ks", "1,2,5", "--out", os.path.join(out, "ablate")],
            ["intervene", "--num-samples", "64", "--sweep-samples", "4",
             "--removal-samples", "8", "--insertion-samples", "4", "--max-remove", "4",
             "--out", os.path.join(out, "intervene")]]
    for argv in runs:
        if cli.main(argv + common) != 0:
            raise SystemExit(f"{argv[0]} failed")
    with open(os.path.join(out, "kernels.txt"), "w") as f:
        f.write(kernels.mode())


if __name__ == "__main__":
    main(sys.argv[1])
