"""Images per second of the image-folder source (decode, resize, crop, to float32)
with 1 and 2 decoding workers, beside the reference's loader (torchvision
``ImageFolder`` + ``DataLoader``, same transform, 1 and 2 worker processes;
written out with Pillow and torch, see ``TorchFolder``) and the
VGG-16 forward (jaxdissect's, and PyTorch's, to conv5_3) on the same machine, in one
run. The folder: ``--images`` synthetic 256x256 JPEGs (``_images.py``), read at
224x224 by the Places365 transform (resize 256, centre crop 224).

The loader keeps a device fed when its images/s exceeds the forward's: the table
prints the ratio. Decoding is CPU-bound and the workers share nothing, so the
images/s grows with the cores given to the workers: the 1 -> 2 worker ratio printed
is the scaling measured here (at most the number of idle cores), and the CPU time
per image gives the rate on ``k`` idle cores, ``k`` / (CPU time per image).

    python benchmarks/bench_data.py [--images 1024] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from _images import write_jpeg_folder  # noqa: E402


def time_folder(root, workers, batch_size):
    from jaxdissect.data.folder import ImageFolderSource
    src = ImageFolderSource(root, (224, 224), "resize-crop", workers=workers)
    src.batch(0, min(batch_size, src.num_examples))  # warm the pool and the file cache
    t0, c0 = time.perf_counter(), time.process_time()
    for a in range(0, src.num_examples, batch_size):
        src.batch(a, min(a + batch_size, src.num_examples))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return src.num_examples / wall, cpu / src.num_examples


class TorchFolder:
    """The reference's loader without torchvision (whose compiled ops do not load with
    this torch): ``ImageFolder``'s file list, ``Resize((256, 256))``, ``CenterCrop(224)``
    and ``ToTensor`` by Pillow and torch, one image per ``__getitem__``."""

    def __init__(self, root):
        self.items = [(os.path.join(d, f), c) for c, d in enumerate(
            sorted(os.path.join(root, x) for x in os.listdir(root)
                   if os.path.isdir(os.path.join(root, x))))
            for f in sorted(os.listdir(d)) if f.endswith(".jpg")]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        import torch
        from PIL import Image
        path, c = self.items[i]
        with Image.open(path) as im:
            im = im.convert("RGB").resize((256, 256), Image.BILINEAR).crop((16, 16, 240, 240))
            x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float().div(255)
        return x, c


def time_torch_loader(root, workers, batch_size):
    import torch
    loader = torch.utils.data.DataLoader(TorchFolder(root), batch_size=batch_size,
                                         num_workers=workers, persistent_workers=True)
    next(iter(loader))  # start the workers
    t0 = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - t0)


def time_forward(batch_size, repeats):
    import jax
    import torch
    from _vgg import vgg_setup
    tmodel, spec = vgg_setup(365)
    x = np.random.default_rng(0).random((batch_size, 224, 224, 3), dtype=np.float32)
    fwd = jax.jit(lambda p, x: spec.activations(p, x, "conv5_3"))
    jax.block_until_ready(fwd(spec.params, x))
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fwd(spec.params, x))
    t_jax = batch_size * repeats / (time.perf_counter() - t0)
    feats = tmodel.features.eval()
    head = feats[:[n for n, _ in feats.named_children()].index("relu5_3") + 1]
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        head(xt)
        t0 = time.perf_counter()
        for _ in range(repeats):
            head(xt)
    return t_jax, batch_size * repeats / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", default="1,2", help="worker counts (comma-separated)")
    ap.add_argument("--forward-batch", type=int, default=8)
    ap.add_argument("--forward-repeats", type=int, default=2)
    ap.add_argument("--folder", default=os.path.join(tempfile.gettempdir(),
                                                     "jaxdissect-bench-jpegs"))
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    root = write_jpeg_folder(args.folder, args.images)
    print(f"{args.images} synthetic 256x256 JPEGs in {root}, read at 224x224; load "
          f"average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    rows = []
    for w in workers:
        ours, cpu = time_folder(root, w, args.batch_size)
        ref = time_torch_loader(root, w, args.batch_size)
        rows.append((w, ours, ref))
        print(f"workers {w}: jaxdissect folder source {ours:7.0f} images/s ({cpu * 1e3:.2f} "
              f"ms of CPU time per image: {w / cpu:.0f} images/s on {w} idle core(s)), "
              f"torch DataLoader (reference) {ref:7.0f} images/s, ratio {ours / ref:.2f}x",
              flush=True)
    if len(rows) > 1:
        print(f"scaling {rows[0][0]} -> {rows[-1][0]} workers: jaxdissect "
              f"{rows[-1][1] / rows[0][1]:.2f}x, torch DataLoader {rows[-1][2] / rows[0][2]:.2f}x")
    f_jax, f_torch = time_forward(args.forward_batch, args.forward_repeats)
    print(f"VGG-16 forward to conv5_3 at 224 on this CPU: jaxdissect {f_jax:.1f} images/s, "
          f"PyTorch {f_torch:.1f} images/s")
    best = max(r[1] for r in rows)
    print(f"loading / forward: {best / f_jax:.0f}x (the folder source outruns this CPU's "
          f"forward {'' if best > f_jax else 'NOT '}by that factor); load average now "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
