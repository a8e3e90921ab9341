"""How much a dissection changes between 1 and 4 (forced host) devices, and why.

The statistics are exact for given activations, so any difference comes from the
model's forward pass: with 4 devices each device runs the network on a quarter of
the batch, and XLA's CPU convolutions can round differently with the batch shape.
Prints the largest activation difference between the two batch shapes, and what it
changes in a world-classifier conv5_3 dissection of ``--num-images`` images (thresholds,
IoU, best labels, labelled units).

    python scripts/measure_device_determinism.py --num-images 512
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    from jaxdissect import pipeline as C
    from jaxdissect.experiments.dissect import dissect
    loaded = C.load_model("world")
    source = C.load_data("world", loaded, args.num_images, C.WORLD_VAL_SEED)
    segmenter = C.load_segmenter("truth", source, loaded)
    compute, _ = C.make_compute(loaded, "conv5_3", segmenter, seg_downsample=4)
    devices = jax.local_devices()
    if len(devices) < 4:
        raise SystemExit("needs 4 devices (XLA_FLAGS=--xla_force_host_platform_device_count=4)")

    # the forward pass alone: one batch whole vs in quarters
    batch = source.batch(0, args.batch_size)
    step = jax.jit(lambda b, prm: compute(b, prm)[0])
    whole = np.asarray(step(batch, loaded.params))
    q = args.batch_size // 4
    parts = np.concatenate([np.asarray(step({k: v[i:i + q] for k, v in batch.items()},
                                            loaded.params)) for i in range(0, 4 * q, q)])
    diff = np.abs(whole - parts)
    print(f"conv5_3 of {args.batch_size} images in one batch vs 4 batches of {q}: "
          f"{int((diff > 0).sum())} of {diff.size} values differ, max |diff| "
          f"{diff.max():.3g} (max |act| {np.abs(whole).max():.3g}, max rel "
          f"{(diff / np.maximum(np.abs(whole), 1e-30)).max():.3g})")

    sample = source.batch(0, 1)
    acts_s, seg_s = jax.eval_shape(compute, sample, loaded.params)
    up = loaded.upsampler("conv5_3", acts_s.shape[1:3], seg_s.shape[2:],
                          sample["image"].shape[1:3])
    runs = {}
    for n in (1, 4):
        runs[n] = dissect(compute, source, segmenter.labels, upsample=up, quantile=0.01,
                          batch_size=args.batch_size, topk=5, progress=False,
                          devices=devices[:n], params=loaded.params)
    a, b = runs[1], runs[4]
    t = np.abs(a.thresholds - b.thresholds)
    iou = np.abs(a.iou - b.iou)
    print(f"dissection of {args.num_images} images, 1 vs 4 devices (batch {args.batch_size}):")
    print(f"  thresholds differing: {int((t > 0).sum())}/{a.num_units} units, max |diff| "
          f"{t.max():.3g} (max rel {(t / np.maximum(np.abs(a.thresholds), 1e-30)).max():.3g})")
    print(f"  IoU differing: {int((iou > 0).sum())} of {iou.size} (unit, label) pairs, max "
          f"|diff| {iou.max():.3g}; best-IoU max |diff| "
          f"{np.abs(a.best_iou - b.best_iou).max():.3g}")
    print(f"  best label differs for {int((a.best_label != b.best_label).sum())} units, "
          f"labelled (IoU > {a.miniou}) for {int((a.labelled != b.labelled).sum())} units; "
          f"labelled units {int(a.labelled.sum())} vs {int(b.labelled.sum())}")
    print(f"  top-image lists differ for "
          f"{int((a.topk_images != b.topk_images).any(1).sum())} units")


if __name__ == "__main__":
    main()
