"""The single-unit ablation sweep on the one sweep engine: 4 forced host devices
against 1, and against the reference's loop (one full PyTorch forward per unit).

Same random-init VGG-16 (Places365 shape: 512 conv5_3 units, fc6/fc7/fc8a 25088->4096->
4096->365), same images (224x224), same per-class counts:

* jaxdissect: ``ablate.ablation_masks_counts``, one ``runtime.sweep``: conv5_3 computed
  once per batch, then all 512 single-unit ablations inside the step (compile
  included), on 1 device and on 4 forced host devices (``XLA_FLAGS=
  --xla_force_host_platform_device_count=4``, set here before JAX starts), each with
  the VGG shortcut that takes fc6 by linearity (``vgg16.single_unit_tail``, the
  default for a single-unit sweep) and with the generic edited tail through
  pool5/fc6/fc7/fc8a (``lax.map`` over chunks of the edit stack);
* PyTorch, as the reference's ``intervention_experiment.py`` does it: for every unit, a
  full forward of every image with that channel zeroed, then the class counts.

Forced host devices split the same CPU cores, so 4 devices measure the engine's
overhead of sharding rather than a speed-up; on an accelerator host (or with more
cores than devices) they would run in parallel. The torch loop over all 512 units
would take tens of minutes on 2 cores, so it is timed on ``--torch-units`` units and
extrapolated linearly (each unit is the same work); the script prints that it did.
Run: ``python benchmarks/bench_sweep.py [--images 16] [--skip-generic]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _vgg import (  # noqa: E402
    ArraySource,
    agreement,
    random_images,
    torch_single_unit_loop,
    vgg_setup,
)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--torch-units", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--skip-generic", action="store_true",
                    help="time only the shortcut (the generic tail takes longer)")
    args = ap.parse_args()

    import jax
    import torch

    from jaxdissect.experiments import ablate

    n, classes, units = args.images, 365, 512
    tmodel, spec = vgg_setup(classes)
    images, labels = random_images(n, classes)
    source = ArraySource(images, labels)
    split = ablate.split_classifier(spec, "conv5_3")
    devices = jax.devices()
    print(f"VGG-16 conv5_3 single-unit sweep: {units} units x {n} images at 224, "
          f"{classes} classes; {len(devices)} JAX {devices[0].platform} device(s) "
          f"({os.cpu_count()} cores), torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f}")

    def sweep(which, count):
        s = split if which == "shortcut" else split._replace(single_unit=None)
        t0 = time.perf_counter()
        out = ablate.ablation_masks_counts(s, source, np.eye(units), classes, batch_size=n,
                                           chunk=args.chunk, progress=False,
                                           devices=devices[:count])
        return time.perf_counter() - t0, out

    times, counts = {}, {}
    for which in ("shortcut",) + (() if args.skip_generic else ("generic",)):
        for count in (1, min(4, len(devices))):
            times[which, count], counts[which, count] = sweep(which, count)
            print(f"jaxdissect sweep, {which}, {count} device(s) (compile included): "
                  f"{times[which, count]:.1f} s")
        same = all((counts[which, 1][k] == counts[which, min(4, len(devices))][k]).all()
                   for k in ("pred", "correct", "true"))
        print(f"  {which}: 4 devices / 1 device time ratio "
              f"{times[which, min(4, len(devices))] / times[which, 1]:.2f}; class counts "
              f"identical: {same}")
    if not args.skip_generic:
        differ = int(((counts["generic", 1]["pred"] != counts["shortcut", 1]["pred"])
                      .any(1)).sum())
        print(f"units whose predictions differ between shortcut and generic tail: {differ} of "
              f"{units} (float rounding at near-tied logits of a random-init net)")

    tested = list(range(0, units, units // args.torch_units))[:args.torch_units]
    t_part, tcounts = torch_single_unit_loop(tmodel, images, labels, tested, classes)
    t_torch = t_part / len(tested) * units
    print(f"PyTorch loop, one full forward per unit: timed {len(tested)} of {units} units "
          f"in {t_part:.1f} s, EXTRAPOLATED linearly to {units} units: {t_torch:.0f} s")
    print(f"class counts agree with jaxdissect for "
          f"{agreement(tcounts, counts['shortcut', 1])}/{len(tested)} timed units")
    for (which, count), t in times.items():
        print(f"ratio torch loop / jaxdissect ({which}, {count} device(s)): {t_torch / t:.0f}x")


if __name__ == "__main__":
    main()
