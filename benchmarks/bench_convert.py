"""Converting a full-size VGG-16 .pth with jaxdissect vs ``torch.load`` of the same file.

    python benchmarks/bench_convert.py [--repeats 5]

Builds a random-init VGG-16 (Places365 layout, 365 classes; ~528 MB of float32),
saves it in both .pth formats to a temporary directory in /tmp (deleted at the end),
then times, in the same run and alternating, ``torch.load`` and jaxdissect's
torch-free read + conversion to Flax params (``load_state_dict`` +
``convert_state_dict``). Prints best-of-N seconds and the ratio jaxdissect / torch
(< 1 means jaxdissect is faster). Files are read once first so both see a warm page
cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxdissect.checkpoints import convert_state_dict  # noqa: E402
from jaxdissect.checkpoints.pth import load_state_dict  # noqa: E402
from tests.support.reference_torch import torch_vgg16  # noqa: E402


def best_time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
        del out
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    model = torch_vgg16(num_classes=365)
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="bench_convert_") as tmp:
        for fmt, zipped in (("zip", True), ("legacy", False)):
            path = os.path.join(tmp, f"vgg16_{fmt}.pth")
            torch.save(model.state_dict(), path, _use_new_zipfile_serialization=zipped)
            size_mb = os.path.getsize(path) / 1e6

            def with_torch(path=path):
                return torch.load(path, map_location="cpu", weights_only=True)

            def with_jaxdissect(path=path):
                return convert_state_dict(load_state_dict(path), "vgg16")[1]

            with_torch(), with_jaxdissect()  # warm the page cache
            t_torch, t_jax = float("inf"), float("inf")
            for _ in range(args.repeats):  # alternate so both see the same machine load
                t_torch = min(t_torch, best_time(with_torch, 1))
                t_jax = min(t_jax, best_time(with_jaxdissect, 1))
            print(f"{fmt:6s} {size_mb:6.0f} MB  torch.load {t_torch:6.3f} s   "
                  f"jaxdissect read+convert {t_jax:6.3f} s   ratio jaxdissect/torch "
                  f"{t_jax / t_torch:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
