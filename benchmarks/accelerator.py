"""jaxdissect beside the reference's algorithms in PyTorch, on whatever accelerator
JAX finds (GPU, TPU, else CPU), same device for both where torch can use it: the one
script a GPU runs (within 8 minutes on one H100), printing one table.

0. Data: ``--images`` (default 36,500, Places365 val's size) synthetic 256x256 JPEGs
   written once to local disk (``--folder``; ``_images.py``), read back through
   jaxdissect's folder source (decoded on worker threads, prefetched while the step
   computes) at 224x224 by the Places365 transform, each image with its own
   synthetic segmentation at 56x56 (random rectangles of 20 labels, from its index).
1. Dissection of VGG-16 conv5_3 (random weights, 512 units) from that folder, image
   loading included, thresholds at the 99.5% level:
   * jaxdissect: ``experiments.dissect.dissect`` with its own choice of path (the
     one pass while each unit's top values fit ``ONE_PASS_MEMORY``, else the radix
     passes over activations kept from one run of the model,
     ``runtime.activations``), the activations stretched to 56x56 by
     ``Upsampler.plain``;
   * PyTorch, the reference's two passes over the same source: the 99.5% level of
     each unit's upsampled activations (exact, by a running top-k merge on the
     device), then the IoU counts of (activation > level) against every label.
2. The full single-unit ablation sweep (512 units) on ``--ablate-images`` images:
   * jaxdissect: ``ablate.ablation_masks_counts`` (conv5_3 once per batch, the 512
     edits inside the step), with the fc6-by-linearity shortcut and with the
     generic edited tail;
   * PyTorch, as the reference's ``intervention_experiment.py``: one full forward
     of every image per ablated unit, timed on ``--torch-units`` units and
     extrapolated linearly to 512 (the script says so).

Times include compilation (JAX's compilation cache starts empty). The table gives
each step's seconds, images/s, peak device memory (where the platform reports it),
the ratio PyTorch / jaxdissect and the agreement of the results. ``--small`` (48
images at 112, segmentation 28, the radix path forced by a small budget, 8 images
for the sweep, 2 torch units) runs the same on a CPU in a few minutes; the suite runs
it with ``JAXDISSECT_KERNELS=xla`` (the accelerators' kernels).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

# torch shares the device: JAX must not take 75% of its memory up front
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from _images import write_jpeg_folder  # noqa: E402
from _vgg import agreement, torch_single_unit_loop, vgg_setup  # noqa: E402

NUM_LABELS = 20     # synthetic segmentation labels 1..20 (0: none)
QUANTILE = 0.005    # the reference's conv5_3 level: each unit's top 0.5%


def synthetic_seg(i, seg, seed=0):
    """Example ``i``'s segmentation ``[1, seg, seg]`` int32: random rectangles of
    labels 1..20 over a random background label, a function of ``(seed, i)``."""
    rng = np.random.default_rng([seed, i, 1])
    out = np.full((seg, seg), rng.integers(1, NUM_LABELS + 1), np.int32)
    for _ in range(4):
        y0, x0 = rng.integers(0, seg, 2)
        h, w = rng.integers(seg // 8, seg // 2, 2)
        out[y0:y0 + h, x0:x0 + w] = rng.integers(1, NUM_LABELS + 1)
    return out[None]


def seg_labels():
    from jaxdissect.labels import LabelSet
    return LabelSet.from_pairs(
        [(f"label{i}", "object" if i % 2 else "part") for i in range(1, NUM_LABELS + 1)])


class SyntheticSource:
    """Random images ``[size, size, 3]``, labels and a 1-layer segmentation
    ``[1, seg, seg]`` (``synthetic_seg``), each example a function of its index."""

    def __init__(self, n, size, seg, classes, seed=0):
        self.num_examples, self.size, self.seg, self.classes = n, size, seg, classes
        self.seed = seed
        self.seg_labels = seg_labels()
        self.class_names = None

    def batch(self, start, stop):
        images, labels = [], []
        for i in range(start, stop):
            rng = np.random.default_rng([self.seed, i])
            images.append(rng.random((self.size, self.size, 3), dtype=np.float32))
            labels.append(rng.integers(0, self.classes))
        return {"image": np.stack(images), "label": np.array(labels, np.int32),
                "seg": np.stack([synthetic_seg(i, self.seg, self.seed)
                                 for i in range(start, stop)])}

    def identity(self):
        return {"source": "synthetic", "n": self.num_examples, "size": self.size,
                "seg": self.seg, "seed": self.seed}


class FolderWithSeg:
    """An image folder (``data.folder.ImageFolderSource``) with each image's
    ``synthetic_seg`` by index."""

    class_names = None

    def __init__(self, folder, seg):
        self.folder, self.seg, self.seg_labels = folder, seg, seg_labels()
        self.num_examples = folder.num_examples

    def batch(self, start, stop):
        out = self.folder.batch(start, stop)
        out["seg"] = np.stack([synthetic_seg(i, self.seg) for i in range(start, stop)]
                              ) if stop > start else np.zeros((0, 1, self.seg, self.seg),
                                                              np.int32)
        return out

    def identity(self):
        return {"folder": self.folder.identity(), "seg": self.seg}


def torch_dissect(tmodel, source, wy, wx, batch_size, device):
    """The reference's two passes in torch: ``(thresholds [u], iou [u, L], seconds)``."""
    import torch

    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    wy_t = torch.as_tensor(np.array(wy), device=device)
    wx_t = torch.as_tensor(np.array(wx), device=device)
    feats = tmodel.features.to(device).eval()
    names = [n for n, _ in feats.named_children()]
    head = feats[:names.index("relu5_3") + 1]
    n, seg = source.num_examples, source.seg
    k = math.ceil(QUANTILE * n * seg * seg)

    def upsampled(start, stop):
        b = source.batch(start, stop)
        x = torch.from_numpy(b["image"]).to(device).permute(0, 3, 1, 2)
        acts = head((x - mean) / std)                                   # [b, u, h, w]
        up = torch.einsum("yi,xj,buij->buyx", wy_t, wx_t, acts)         # [b, u, S, S]
        return up, torch.from_numpy(b["seg"][:, 0]).to(device).long()

    def sync():
        if device != "cpu":
            torch.cuda.synchronize()

    with torch.no_grad():
        sync()
        t0 = time.perf_counter()
        top = None
        for s in range(0, n, batch_size):                               # pass 1: levels
            up, _ = upsampled(s, min(s + batch_size, n))
            vals = up.permute(1, 0, 2, 3).reshape(up.shape[1], -1)
            vals = vals if top is None else torch.cat([top, vals], 1)
            top = torch.topk(vals, min(k, vals.shape[1]), dim=1).values
        t = top[:, k - 1]
        inter = unit_area = label_area = 0
        for s in range(0, n, batch_size):                               # pass 2: IoU
            up, lab = upsampled(s, min(s + batch_size, n))
            active = (up > t.view(1, -1, 1, 1)).float()
            onehot = torch.nn.functional.one_hot(lab, NUM_LABELS + 1).float()  # [b,S,S,L]
            inter = inter + torch.einsum("buyx,byxl->ul", active, onehot)
            unit_area = unit_area + active.sum((0, 2, 3))
            label_area = label_area + onehot.sum((0, 1, 2))
        iou = inter / (unit_area[:, None] + label_area[None] - inter).clamp(min=1)
        sync()
        seconds = time.perf_counter() - t0
    return t.cpu().numpy(), iou.cpu().numpy(), seconds


def peak_memory(dev):
    """The device's peak bytes in use so far, or None where it reports none (CPU)."""
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    return None if not stats else stats.get("peak_bytes_in_use")


def gib(x):
    return "n/a" if x is None else f"{x / 2 ** 30:.2f} GiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true",
                    help="48 images at 112 (segmentation 28), radix path, 8 for the sweep, "
                         "2 torch units")
    ap.add_argument("--images", type=int, default=36_500)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--ablate-images", type=int, default=500)
    ap.add_argument("--torch-units", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--budget", type=int, default=None,
                    help="the dissection's one-pass budget (default: its own choice)")
    ap.add_argument("--folder", default=None,
                    help="where the JPEGs go (default: a folder under the temporary one)")
    args = ap.parse_args()
    if args.small:
        args.images, args.size, args.ablate_images, args.torch_units = 48, 112, 8, 2
        args.batch_size, args.budget = 8, args.budget or 32
    seg = args.size // 4
    folder = args.folder or os.path.join(tempfile.gettempdir(),
                                         f"jaxdissect-accelerator-{args.images}")

    import jax
    import torch

    from jaxdissect.data.folder import ImageFolderSource
    from jaxdissect.experiments import ablate
    from jaxdissect.experiments.dissect import dissect
    from jaxdissect.stats import kernels
    from jaxdissect.stats.upsample import Upsampler

    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="jaxcache-"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    dev = jax.devices()[0]
    tdev = "cuda" if torch.cuda.is_available() and dev.platform == "gpu" else "cpu"
    tname = torch.cuda.get_device_name(0) if tdev == "cuda" else \
        f"CPU ({torch.get_num_threads()} threads)"
    print(f"JAX: {dev.platform} {getattr(dev, 'device_kind', '')}; PyTorch: {tname}; "
          f"kernels {kernels.mode()}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores", flush=True)
    if tdev == "cpu" and dev.platform != "cpu":
        print("NOTE: torch has no CUDA here, so the PyTorch side runs on the CPU: the "
              "ratios below compare different devices", flush=True)

    def torch_peak_reset():
        if tdev == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def torch_peak():
        return torch.cuda.max_memory_allocated() if tdev == "cuda" else None

    rows = []
    # 0. data
    t0 = time.perf_counter()
    write_jpeg_folder(folder, args.images, 256, classes=10)
    t_write = time.perf_counter() - t0
    source = FolderWithSeg(ImageFolderSource(folder, (args.size, args.size), "resize-crop"),
                           seg)
    print(f"0. {args.images} synthetic 256x256 JPEGs in {folder} ({t_write:.1f} s to write "
          f"or find); read at {args.size} by {source.folder.workers} workers", flush=True)

    classes, units = 365, 512
    tmodel, spec = vgg_setup(classes, size=args.size)
    h = spec.activations(spec.params, np.zeros((1, args.size, args.size, 3), np.float32),
                         "conv5_3").shape[1]
    up = Upsampler.plain((h, h), (seg, seg))
    devices = jax.devices()[:1]

    def compute(batch, p):
        return spec.activations(p, batch["image"], "conv5_3"), batch["seg"]

    # 1. dissection
    print(f"\n1. dissection: VGG-16 conv5_3 ({units} units), {args.images} images from the "
          f"folder at {args.size}, segmentation {seg}x{seg} ({NUM_LABELS} labels), level "
          f"{1 - QUANTILE:.1%}, batch {args.batch_size}", flush=True)
    t0 = time.perf_counter()
    res = dissect(compute, source, source.seg_labels, upsample=up, quantile=QUANTILE,
                  batch_size=args.batch_size, params=spec.params, progress=False,
                  devices=devices, budget=args.budget)
    t_jax = time.perf_counter() - t0
    mem_jax = peak_memory(dev)
    print(f"jaxdissect: {t_jax:.1f} s (compile and loading included)", flush=True)
    torch_peak_reset()
    thr, iou, t_torch = torch_dissect(tmodel, source, up.wy, up.wx, args.batch_size, tdev)
    print(f"PyTorch reference (two passes, exact levels): {t_torch:.1f} s", flush=True)
    rel = np.abs(res.thresholds - thr) / np.maximum(np.abs(thr), 1e-6)
    same = (np.asarray(res.best_label) == iou[:, 1:].argmax(1) + 1).mean()
    agree = (f"thresholds within {rel.max():.1e} (relative), best label equal for "
             f"{same:.1%} of units, IoU within {np.abs(res.iou[:, 1:] - iou[:, 1:]).max():.1e}")
    print(f"agreement: {agree}", flush=True)
    rows.append((f"dissect conv5_3, {args.images} images", t_jax, args.images / t_jax,
                 gib(mem_jax), t_torch, gib(torch_peak()), t_torch / t_jax, agree))

    # 2. the single-unit ablation sweep
    n_abl = args.ablate_images
    print(f"\n2. single-unit ablation sweep: {units} units x {n_abl} images, {classes} "
          f"classes", flush=True)
    asrc = SyntheticSource(n_abl, args.size, seg, classes, seed=1)
    split = ablate.split_classifier(spec, "conv5_3")
    times, counts = {}, {}
    for which, s in (("shortcut", split), ("generic", split._replace(single_unit=None))):
        t0 = time.perf_counter()
        counts[which] = ablate.ablation_masks_counts(
            s, asrc, np.eye(units), classes, batch_size=min(args.batch_size, 50),
            chunk=64, progress=False, devices=devices)
        times[which] = time.perf_counter() - t0
        print(f"jaxdissect, {which}: {times[which]:.1f} s (compile included)", flush=True)
    mem_jax = peak_memory(dev)
    b = asrc.batch(0, n_abl)
    tested = list(range(0, units, units // args.torch_units))[:args.torch_units]
    torch_peak_reset()
    t_part, tcounts = torch_single_unit_loop(tmodel, b["image"], b["label"], tested, classes,
                                             device=tdev)
    t_loop = t_part / len(tested) * units
    print(f"PyTorch loop, one full forward per unit: {len(tested)} units in {t_part:.1f} s, "
          f"EXTRAPOLATED linearly to {units} units: {t_loop:.1f} s")
    agree = (f"class counts equal for {agreement(tcounts, counts['shortcut'])}/{len(tested)} "
             f"timed units")
    for which, t in times.items():
        rows.append((f"ablate {units} units x {n_abl} images, {which}", t,
                     units * n_abl / t, gib(mem_jax), t_loop, gib(torch_peak()),
                     t_loop / t, agree + (", torch extrapolated" if which == "shortcut"
                                          else "")))

    print(f"\n{dev.platform} {getattr(dev, 'device_kind', '')}, kernels {kernels.mode()}: "
          f"seconds include compilation; images/s counts image-units for the sweep; peak "
          f"memory is the process's peak so far")
    head = ("step", "jaxdissect s", "images/s", "jax peak mem", "PyTorch s", "torch peak mem",
            "ratio", "agreement")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, t, rate, mem, tt, tmem, ratio, agree in rows:
        print(f"| {name} | {t:.1f} | {rate:,.0f} | {mem} | {tt:.1f} | {tmem} | {ratio:.1f}x | "
              f"{agree} |")


if __name__ == "__main__":
    main()
