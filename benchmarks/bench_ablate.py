"""Single-unit ablation sweep of VGG-16 conv5_3: jaxdissect vs the reference's loop.

Same random-init VGG-16 (Places365 shape: 512 conv5_3 units, fc6/fc7/fc8a 25088->4096->
4096->365), same images (224x224), same per-class counts:

* jaxdissect: ``ablate.ablation_masks_counts`` -- conv5_3 computed once per batch, then all
  512 single-unit ablations, vmapped in chunks (compile included), timed twice: with the
  VGG shortcut that takes fc6 by linearity (``ablate.vgg_single_unit_tail``, the default
  for a single-unit sweep) and with the generic edited tail through pool5/fc6/fc7/fc8a;
* PyTorch, as the reference's ``intervention_experiment.py`` does it: for every unit, a
  full forward of every image with that channel zeroed, then the class counts.

The torch loop over all 512 units would take tens of minutes on 2 cores, so it is timed
on ``--torch-units`` units and extrapolated linearly (each unit is the same work); the
script prints that it did. Run: ``python benchmarks/bench_ablate.py [--images 8]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--torch-units", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=32)
    args = ap.parse_args()

    import jax
    import torch

    from jaxdissect.checkpoints import convert_state_dict, model_from_config
    from jaxdissect.experiments import ablate
    from jaxdissect.models import vgg16
    from tests.reference_torch import torch_vgg16

    n, classes, units = args.images, 365, 512
    tmodel = torch_vgg16(num_classes=classes, seed=0)
    sd = {k: v.numpy() for k, v in tmodel.state_dict().items()}
    config, params = convert_state_dict(sd, "vgg16")
    model = model_from_config("vgg16", config)
    params = jax.tree_util.tree_map(jax.numpy.asarray, params)
    rng = np.random.default_rng(0)
    images = rng.random((n, 224, 224, 3), dtype=np.float32)
    labels = rng.integers(0, classes, n).astype(np.int32)

    class Source:
        num_examples, seg_labels, class_names = n, None, None

        def batch(self, a, b):
            return {"image": images[a:b], "label": labels[a:b]}

    split = ablate.split_classifier(vgg16.spec(model, params), "conv5_3")
    print(f"VGG-16 conv5_3 single-unit sweep: {units} units x {n} images at 224, "
          f"{classes} classes; {jax.device_count()} JAX device(s), "
          f"torch threads {torch.get_num_threads()}")
    t0 = time.perf_counter()
    counts = ablate.ablation_masks_counts(split, Source(), np.eye(units), classes,
                                          batch_size=n, chunk=args.chunk, progress=False)
    t_jax = time.perf_counter() - t0
    print(f"jaxdissect sweep, fc6 by linearity (split.single_unit; compile included): "
          f"{t_jax:.1f} s")
    t0 = time.perf_counter()
    generic = ablate.ablation_masks_counts(split._replace(single_unit=None), Source(),
                                           np.eye(units), classes, batch_size=n,
                                           chunk=args.chunk, progress=False)
    t_gen = time.perf_counter() - t0
    differ = int(((generic["pred"] != counts["pred"]).any(1)).sum())
    print(f"jaxdissect sweep, generic vmapped edited tail pool5..fc8a (compile included): "
          f"{t_gen:.1f} s; units whose predictions differ from the shortcut's: {differ} of "
          f"{units} (float rounding at near-tied logits of a random-init net)")

    # the reference's procedure: a full forward per ablated unit
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2) - mean) / std
    y = torch.from_numpy(labels).long()
    feats = tmodel.features

    def forward_ablated(unit):
        h = x
        for name, mod in feats.named_children():
            h = mod(h)
            if name == "relu5_3":
                h = h.clone()
                h[:, unit] = 0
        h = torch.flatten(tmodel.avgpool(h), 1)
        return tmodel.classifier(h)

    tested = list(range(0, units, units // args.torch_units))[:args.torch_units]
    agree = 0
    with torch.no_grad():
        forward_ablated(0)  # warm-up, not timed
        t0 = time.perf_counter()
        for u in tested:
            pred = forward_ablated(u).argmax(1)
            pc = pred.bincount(minlength=classes).numpy()
            cc = y.bincount((pred == y).long(), minlength=classes).numpy()
            agree += int((pc == counts["pred"][u]).all() and (cc == counts["correct"][u]).all())
        t_part = time.perf_counter() - t0
    t_torch = t_part / len(tested) * units
    print(f"PyTorch loop, one full forward per unit: timed {len(tested)} of {units} units "
          f"in {t_part:.1f} s, EXTRAPOLATED linearly to {units} units: {t_torch:.0f} s")
    print(f"class counts agree with jaxdissect for {agree}/{len(tested)} timed units")
    print(f"ratio (torch loop / jaxdissect, shortcut): {t_torch / t_jax:.0f}x  "
          f"(target >= 100x)")
    print(f"ratio (torch loop / jaxdissect, generic edited tail): {t_torch / t_gen:.0f}x")


if __name__ == "__main__":
    main()
