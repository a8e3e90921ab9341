"""Dissection tallies: jaxdissect against a PyTorch implementation of the
reference's algorithms, on the same inputs, in one run on this machine.

Inputs: N images x U units of activations already on the 56x56 segmentation grid,
and a K=2 segmentation with L labels. Both sides compute thresholds at the top-q
level (q = 0.01) and the unit-by-label IoU at those thresholds.

* torch (reference algorithms, our own code): a KLL-style running quantile sketch
  at r = 8192 (compactor levels, top capacity 2r shrinking by 0.67 per level, sort
  and keep every other element with a random offset, weighted readout with
  interpolation) fed 10 images per batch; then IoU from conditional means of the
  indicator (a > t), one image at a time, one masked selection per present label
  with a running mean/variance per label, as the reference's
  ``tally_conditional_mean`` + ``iou_from_conditional_indicator_mean`` do.
* jaxdissect, the path ``dissect`` takes on these inputs (ceil(q n) <= budget):
  ONE pass of ``TopLabels`` (each unit's ``budget`` largest values with their
  pixels' labels; exact thresholds and exact IoU counts), one compiled sharded
  step per batch, then a host readout.
* jaxdissect, the path for data too large for the budget, printed alongside: three
  exact radix passes, then an ``IoUTally`` pass (exact integer counts).

Prints the times, the ratios, each method's threshold error against the exact
thresholds (NumPy ``partition`` on all the data at once) and the IoU error.
Compilation is excluded (a warm-up step on the same shapes).

    python benchmarks/bench_tally.py            # 64 x 512 x 56 x 56, 60 labels
    python benchmarks/bench_tally.py --images 16 --units 64   # quick
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jaxdissect.runtime import devices
from jaxdissect.stats import (
    RADIX_SCHEDULE,
    IoUTally,
    RadixHistogram,
    radix_refine,
    rank_for_level,
)
from jaxdissect.stats.quantile import key_to_float
from jaxdissect.stats.toplabels import TopLabels


def make_inputs(images, units, size, labels, seed=0):
    """Smooth non-negative activations and blocky two-layer segmentations."""
    rng = np.random.default_rng(seed)
    coarse = rng.gamma(1.0, 1.0, (images, size // 8, size // 8, units)).astype(np.float32)
    acts = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    acts += rng.random(acts.shape, dtype=np.float32) * 0.5
    half = labels // 2
    objects = rng.integers(1, half, (images, 8, 8))
    materials = rng.integers(half, labels, (images, 4, 4)) * (rng.random((images, 4, 4)) < 0.7)
    seg = np.stack([np.kron(objects, np.ones((size // 8, size // 8), int)),
                    np.kron(materials, np.ones((size // 4, size // 4), int))], axis=1)
    return acts, seg.astype(np.int32)


# ---------------------------------------------------------------------------
# torch: the reference's algorithms


class TorchKLL:
    """KLL-style sketch per unit, all units compacted in lockstep."""

    def __init__(self, r: int, depth: int, seed: int = 0):
        self.resolution = 2 * r
        self.levels = [torch.empty(depth, 0)]
        self.gen = torch.Generator().manual_seed(seed)
        self.lo = torch.full((depth,), math.inf)
        self.hi = torch.full((depth,), -math.inf)

    def capacity(self, h: int) -> int:
        top = len(self.levels) - 1
        return max(8, -8 * (-int(math.ceil(self.resolution * 0.67 ** (top - h))) // 8))

    def add(self, x: torch.Tensor) -> None:  # x [n, depth]
        x = x.t()
        while x.shape[1]:
            room = self.capacity(0) - self.levels[0].shape[1]
            self.levels[0] = torch.cat([self.levels[0], x[:, :room]], dim=1)
            x = x[:, room:]
            if self.levels[0].shape[1] >= self.capacity(0):
                self.compact()

    def compact(self) -> None:
        h = 0
        while h < len(self.levels) and self.levels[h].shape[1] >= self.capacity(h):
            data = torch.sort(self.levels[h], dim=1).values
            if h == 0:
                self.lo = torch.minimum(self.lo, data[:, 0])
                self.hi = torch.maximum(self.hi, data[:, -1])
            even = data.shape[1] // 2 * 2
            offset = int(torch.randint(0, 2, (1,), generator=self.gen))
            if h + 1 == len(self.levels):
                self.levels.append(torch.empty(data.shape[0], 0))
            self.levels[h + 1] = torch.cat([self.levels[h + 1], data[:, offset:even:2]], dim=1)
            self.levels[h] = data[:, even:]
            h += 1

    def quantile(self, p: float) -> torch.Tensor:
        if self.levels[0].shape[1]:
            self.lo = torch.minimum(self.lo, self.levels[0].min(1).values)
            self.hi = torch.maximum(self.hi, self.levels[0].max(1).values)
        values = torch.cat(self.levels, dim=1)
        weights = torch.cat([torch.full((lv.shape[1],), 2.0 ** h)
                             for h, lv in enumerate(self.levels)])
        values, order = torch.sort(values, dim=1)
        w = weights[order]
        values = torch.cat([self.lo[:, None], values, self.hi[:, None]], dim=1)
        w = torch.cat([torch.zeros(len(w), 1), w, torch.zeros(len(w), 1)], dim=1)
        cum = (torch.cumsum(w, dim=1) - w / 2) / w.sum(dim=1, keepdim=True)
        cum, values = cum.numpy(), values.numpy()
        return torch.tensor([np.interp(p, cum[u], values[u]) for u in range(len(values))],
                            dtype=torch.float32)


class TorchRunningMean:
    """Chan-style running mean and variance of [n, u] samples."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, a: torch.Tensor) -> None:
        n = a.shape[0]
        mean = a.sum(0) / n
        m2 = (a - mean).pow(2).sum(0)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = (mean - self.mean) * (n / total)
        self.mean = self.mean + delta
        self.m2 = self.m2 + m2 + delta.pow(2) * (n / total * self.count)
        self.count = total


def torch_reference(acts_nchw: torch.Tensor, seg: torch.Tensor, q: float, r: int = 8192):
    units = acts_nchw.shape[1]
    start = time.perf_counter()
    sketch = TorchKLL(r, units)
    for i in range(0, len(acts_nchw), 10):
        sketch.add(acts_nchw[i:i + 10].permute(0, 2, 3, 1).reshape(-1, units))
    level = sketch.quantile(1 - q)
    t_quantile = time.perf_counter() - start

    start = time.perf_counter()
    cond: dict[int, TorchRunningMean] = {}
    for i in range(len(acts_nchw)):
        ind = (acts_nchw[i:i + 1] > level[None, :, None, None]).float()
        by_pixel = ind.permute(0, 2, 3, 1).contiguous()
        s = seg[i:i + 1]
        counts = s.reshape(-1).bincount()
        present = (counts[1:].nonzero() + 1)[:, 0]
        cond.setdefault(0, TorchRunningMean()).add(by_pixel.reshape(-1, units))
        for c in present.tolist():
            mask = (s == c).max(1).values[..., None].expand(by_pixel.shape)
            cond.setdefault(c, TorchRunningMean()).add(by_pixel[mask].reshape(-1, units))
    labels = max(cond) + 1
    act = cond[0].mean
    iou = torch.zeros(units, labels)
    for c, stat in cond.items():
        if c == 0:
            continue
        gt = stat.count / cond[0].count
        isect = stat.mean * gt
        iou[:, c] = isect / (act + gt - isect)
    t_iou = time.perf_counter() - start
    return level.numpy(), iou.numpy(), t_quantile, t_iou


# ---------------------------------------------------------------------------
# jaxdissect


def _timed_pass(update, empty, batches, *replicated):
    """Compile (on the first batch, not timed), then one timed pass: ``(state, s)``.
    Batches are placed on the devices before timing, as the torch side's tensors
    are already in memory."""
    step = devices.sharded_tally(update, empty)
    placed = [jax.device_put(b, step.split) for b in batches()]
    jax.block_until_ready(placed)
    jax.block_until_ready(step(step.init(empty), placed[0], *replicated))
    start = time.perf_counter()
    state = step.init(empty)
    for b in placed:
        state = step(state, b, *replicated)
    state = step.result(state)
    jax.block_until_ready(state)
    return state, time.perf_counter() - start


def jax_dissect(acts, seg, q, labels, batch, budget):
    """The path ``dissect`` takes here (ceil(q n) <= budget): ONE pass of
    ``TopLabels`` gives exact thresholds and exact IoU counts."""
    units, layers = acts.shape[-1], seg.shape[1]

    def batches():
        for i in range(0, len(acts), batch):
            yield {"a": acts[i:i + batch], "s": seg[i:i + batch]}

    empty = TopLabels.empty(units, budget, labels, layers)
    state, t_pass = _timed_pass(lambda s, b: s.update(b["a"], b["s"]), empty, batches)
    start = time.perf_counter()
    thresholds = state.thresholds(q)
    iou = state.iou(thresholds)
    t_read = time.perf_counter() - start
    return thresholds, iou, t_pass, t_read


def jax_radix(acts, q, labels, batch, thresholds_exact):
    """The path for data sets too large for the buffer: three radix passes, then
    an ``IoUTally`` pass (timed separately; compile excluded)."""
    units = acts.shape[-1]

    def batches():
        for i in range(0, len(acts), batch):
            yield {"a": acts[i:i + batch]}

    t_quantile, prefix, ranks = 0.0, None, None
    for known, bits in RADIX_SCHEDULE:
        empty = RadixHistogram.empty(units, 1, known, bits, prefix)
        hist, t = _timed_pass(lambda h, b: h.update(b["a"]), empty, batches)
        t_quantile += t
        start = time.perf_counter()
        if ranks is None:
            ranks = np.full((units, 1), rank_for_level(q, int(hist.count.to_numpy())))
        prefix, ranks = radix_refine(hist, ranks)
        t_quantile += time.perf_counter() - start
    thresholds = key_to_float(prefix)[:, 0]
    assert np.array_equal(thresholds, thresholds_exact), "radix thresholds are not exact"
    return t_quantile


def jax_iou_pass(acts, seg, labels, batch, thresholds):
    def batches():
        for i in range(0, len(acts), batch):
            yield {"a": acts[i:i + batch], "s": seg[i:i + batch]}

    tally, t = _timed_pass(lambda s, b, th: s.update(b["a"], th, b["s"]),
                           IoUTally.empty(acts.shape[-1], labels), batches,
                           jnp.asarray(thresholds))
    return tally.compute(), t


def exact(acts, seg, q, labels):
    """NumPy on all the data at once: k-th largest per unit, then exact IoU."""
    flat = acts.reshape(-1, acts.shape[-1])
    k = rank_for_level(q, len(flat))
    t = -np.partition(-flat, k - 1, axis=0)[k - 1]
    above = (flat > t).astype(np.float32)
    onehot = np.zeros((len(flat), labels), np.float32)
    for layer in range(seg.shape[1]):
        onehot[np.arange(len(flat)), seg[:, layer].reshape(-1)] = 1.0
    inter = (above.T @ onehot).astype(np.int64)
    union = above.sum(0).astype(np.int64)[:, None] + onehot.sum(0).astype(np.int64) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    iou[:, 0] = 0
    return t, iou, flat


def rank_error(flat, t, t_exact):
    """Largest |#(x > t) - #(x > t_exact)| over units, as a fraction of n."""
    return np.max(np.abs((flat > t).sum(0) - (flat > t_exact).sum(0))) / len(flat)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--labels", type=int, default=60)
    parser.add_argument("--quantile", type=float, default=0.01)
    parser.add_argument("--batch", type=int, default=32,
                        help="images per jaxdissect step (dissect's default batch size)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    acts, seg = make_inputs(args.images, args.units, args.size, args.labels)
    n = args.images * args.size * args.size
    budget = -(-rank_for_level(args.quantile, n) // 128) * 128
    print(f"inputs: {args.images} images x {args.units} units x {args.size}x{args.size}, "
          f"{args.labels} labels, K=2, q={args.quantile}; jaxdissect batch {args.batch}, "
          f"{jax.device_count()} JAX device(s), "
          f"torch threads {torch.get_num_threads()}")

    t_exact, iou_exact, flat = exact(acts, seg, args.quantile, args.labels)
    acts_t = torch.from_numpy(acts).permute(0, 3, 1, 2)  # the reference's NCHW layout
    ref_t, ref_iou, ref_q, ref_i = torch_reference(acts_t, torch.from_numpy(seg), args.quantile)
    jd_t, jd_iou, jd_pass, jd_read = jax_dissect(acts, seg, args.quantile, args.labels,
                                                 args.batch, budget)
    rx_q = jax_radix(acts, args.quantile, args.labels, args.batch, t_exact)
    rx_iou, rx_i = jax_iou_pass(acts, seg, args.labels, args.batch, t_exact)

    ref_total, jd_total, rx_total = ref_q + ref_i, jd_pass + jd_read, rx_q + rx_i
    print(f"torch reference       : quantile pass {ref_q:7.3f}s + IoU pass {ref_i:7.3f}s "
          f"= {ref_total:7.3f}s")
    print(f"jaxdissect (one pass) : thresholds+IoU pass {jd_pass:7.3f}s + readout "
          f"{jd_read:6.3f}s = {jd_total:7.3f}s (budget {budget}; compile not counted)")
    print(f"jaxdissect (radix)    : 3 radix passes {rx_q:7.3f}s + IoU pass {rx_i:7.3f}s "
          f"= {rx_total:7.3f}s (the path when ceil(q n) exceeds the budget)")
    print(f"speed-up              : one pass {ref_total / jd_total:6.1f}x   "
          f"radix path {ref_total / rx_total:6.1f}x   (IoU pass alone {ref_i / rx_i:5.1f}x)")
    for name, t, iou in (("torch KLL r=8192", ref_t, ref_iou), ("jaxdissect exact", jd_t, jd_iou),
                         ("jaxdissect radix", t_exact, rx_iou)):
        cols = min(iou.shape[1], iou_exact.shape[1])
        print(f"{name:17s}: threshold max |err| {np.max(np.abs(t - t_exact)):.3g}, "
              f"units not exact {int(np.sum(t != t_exact))}/{len(t)}, "
              f"rank error {rank_error(flat, t, t_exact):.2e} of n; "
              f"IoU max |err| {np.max(np.abs(iou[:, :cols] - iou_exact[:, :cols])):.3g}")


if __name__ == "__main__":
    main()
