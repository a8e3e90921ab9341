"""The role of units in a generator: what turning units off or on does to the scene.

Follows the paper's generator experiments (Bau et al. 2020, "Role of units in the
generator"; the reference's ``experiment/generator_int_experiment.py`` and its
notebook):

* **per-unit ablation**: for every unit of a layer, the change in the pixel share of
  every segmentation class when that unit alone is zeroed;
* **removal**: zeroing a concept's n best-IoU units together, n = 0 .. 30; the
  fraction of the concept's pixels removed, ``R = -sum(d_i) / sum(b_i)`` over samples
  i (``b_i`` the unedited share, ``d_i`` the change), with a 99% confidence interval
  of that ratio (2.58 standard errors by the delta method: the standard error of
  the mean of ``-d_i - R b_i``, over the mean of ``b_i``, so the pairing of each
  sample's change with its own share counts);
* **insertion**: setting a concept's top-20 units to their 99.5% quantile values at
  one feature-map location; the concept pixels added, broken down by the labels the
  unedited image has at the centre of that location (its context).

A pixel "has" label l when any of the segmentation's K layers is l there; the pixel
share of l is the fraction of the image's pixels that have it. Every edit runs
through ``tail`` (``model.apply(..., start=layer)``) from activations computed once per
batch, ``jax.vmap``-ed over a stack of edits, then through the segmenter.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.experiments.ablate import Split
from jaxdissect.data.source import ImageSource
from jaxdissect.edits import Edit, mask_chunks
from jaxdissect.runtime.resume import ResumableSum

Segment = Callable[[jax.Array], jax.Array]     # images -> seg [b, K, Hs, Ws] int

Z99 = 2.58  # two-sided 99% normal quantile, as the reference's notebook uses


def split_generator(model, params, layer: str, to_images=None) -> Split:
    """Cut a generator at ``layer``: ``head(params, batch) -> acts`` from ``batch["z"]``;
    ``tail(params, acts, edit) ->`` images in [0, 1] (``to_images`` maps the generator's
    output range, e.g. ``lambda x: (x + 1) / 2`` for ProGAN's [-1, 1])."""
    post = to_images or (lambda x: x)

    def head(p, batch):
        out, _ = model.apply({"params": p}, jnp.asarray(batch["z"]), stop=layer)
        return out

    def tail(p, acts, edit):
        out, _ = model.apply({"params": p}, acts, edits={layer: edit}, start=layer)
        return jnp.clip(post(out), 0.0, 1.0)

    return Split(head, tail, params)


def label_presence(seg: jax.Array, num_labels: int) -> jax.Array:
    """``[b, K, H, W]`` -> ``[b, H, W, L]`` bool: pixel has label l in any layer."""
    onehot = seg[..., None] == jnp.arange(num_labels, dtype=seg.dtype).reshape(
        (1,) * seg.ndim + (num_labels,))
    return onehot.any(axis=1)


def pixel_shares(seg: jax.Array, num_labels: int) -> jax.Array:
    """``[b, K, H, W]`` -> ``[b, L]`` fraction of pixels having each label."""
    return label_presence(seg, num_labels).mean(axis=(1, 2), dtype=jnp.float32)


def _unit_edit(alpha, value):
    """alpha ``[units]`` or ``[h, w, units]``, value ``[units]`` -> NHWC-rank edit."""
    a = alpha.reshape((1,) * (4 - alpha.ndim) + alpha.shape)
    v = jnp.broadcast_to(value, a.shape[-1:]).reshape(1, 1, 1, -1)
    return Edit(a, v)


# ---------------------------------------------------------------- ablation sweeps

def ablation_share_deltas(split: Split, segment: Segment, source: ImageSource,
                          masks: np.ndarray, num_labels: int, *, batch_size: int = 16,
                          chunk: int = 16, cachefile: str | None = None,
                          desc: str = "ablate", progress: bool = True) -> dict:
    """Per-sample change in every label's pixel share with each row of ``masks`` zeroed.

    ``masks [E, units]`` (1 = unit zeroed). Returns sums over samples: ``base [L]`` and
    ``base_sq [L]`` (unedited shares), ``delta [E, L]`` and ``delta_sq [E, L]``
    (edited minus unedited, per sample), ``delta_base [E, L]`` (their products with
    the unedited share), and ``n``.
    """
    masks, padded, pad = mask_chunks(masks, chunk)
    n_edits, n_units = masks.shape
    chunk = padded.shape[1]

    def shares(params, acts, alpha):
        images = split.tail(params, acts, _unit_edit(alpha, jnp.zeros(())))
        return pixel_shares(segment(images), num_labels)

    @jax.jit
    def base_step(params, acts):
        if acts.shape[-1] != n_units:
            raise ValueError(f"layer has {acts.shape[-1]} units but masks have {n_units}")
        return shares(params, acts, jnp.zeros((n_units,)))

    @jax.jit
    def step(params, acts, base, mask_chunk):
        d = jax.vmap(lambda a: shares(params, acts, a) - base)(mask_chunk)  # [E, b, L]
        return d.sum(1), (d * d).sum(1), (d * base[None]).sum(1)

    head_j = jax.jit(split.head)
    params = split.params
    key = {"masks": masks, "L": num_labels, "bs": batch_size, "n": source.num_examples,
           "kind": "share_deltas+cross"}
    acc = ResumableSum(cachefile, key, {
        "base": np.zeros((num_labels,)), "base_sq": np.zeros((num_labels,)),
        "delta": np.zeros((n_edits, num_labels)), "delta_sq": np.zeros((n_edits, num_labels)),
        "delta_base": np.zeros((n_edits, num_labels)), "n": np.zeros((), np.int64)})
    for start, batch in acc.batches(source, batch_size, desc=desc, progress=progress):
        acts = head_j(params, batch)
        base = base_step(params, acts)
        d = np.zeros((n_edits + pad, num_labels))
        d2, db = np.zeros_like(d), np.zeros_like(d)
        for i, mc in enumerate(padded):
            rows = slice(i * chunk, (i + 1) * chunk)
            d[rows], d2[rows], db[rows] = step(params, acts, base, jnp.asarray(mc))
        b = np.asarray(base, np.float64)
        acc.add(start, start + b.shape[0], base=b.sum(0), base_sq=(b * b).sum(0),
                delta=d[:n_edits], delta_sq=d2[:n_edits], delta_base=db[:n_edits],
                n=b.shape[0])
    return acc.result()


def mean_and_stderr(total, total_sq, n):
    """Mean and standard error of the mean from sums (sample std, ``n - 1``)."""
    total, total_sq = np.asarray(total, np.float64), np.asarray(total_sq, np.float64)
    mean = total / max(n, 1)
    var = np.maximum(total_sq / max(n, 1) - mean * mean, 0.0) * (n / max(n - 1, 1))
    return mean, np.sqrt(var / max(n, 1))


def best_iou_units(iou: np.ndarray, concept: int, n: int) -> np.ndarray:
    """The ``n`` units with the highest IoU for ``concept``; ``iou [units, labels]``."""
    return np.argsort(-np.asarray(iou)[:, concept], kind="stable")[:n]


def removal_curve(deltas: dict, concept: int, ns: Sequence[int]) -> dict:
    """The concept's pixel share after removing its n best-IoU units, from the sums of
    ``ablation_share_deltas`` run on masks ``[len(ns), units]`` (one per n)."""
    n = max(int(deltas["n"]), 1)
    base = float(deltas["base"][concept]) / n
    base_sq = float(deltas["base_sq"][concept]) / n
    d = np.asarray(deltas["delta"][:, concept], np.float64) / n
    d2 = np.asarray(deltas["delta_sq"][:, concept], np.float64) / n
    db = np.asarray(deltas["delta_base"][:, concept], np.float64) / n
    if base > 0:
        removed = -d / base
        # residuals r_i = -d_i - R b_i have mean 0; their variance from the sums
        var = np.maximum(d2 + 2 * removed * db + removed ** 2 * base_sq, 0.0)
        se = np.sqrt(var * n / max(n - 1, 1) / n) / base
    else:
        removed = se = np.full_like(d, np.nan)
    return {"n_units": list(map(int, ns)), "baseline_share": base,
            "remaining_share": (1 - removed).tolist(), "removed_fraction": removed.tolist(),
            "ci99_low": (removed - Z99 * se).tolist(), "ci99_high": (removed + Z99 * se).tolist(),
            "samples": int(deltas["n"])}


# ---------------------------------------------------------------- insertion

def insertion_by_context(split: Split, segment: Segment, source: ImageSource,
                         units: np.ndarray, values: np.ndarray, concept: int,
                         num_labels: int, *, batch_size: int = 16, chunk: int = 16,
                         cachefile: str | None = None, desc: str = "insert",
                         progress: bool = True) -> dict:
    """Concept pixels added by setting ``units`` to ``values`` at each feature-map location.

    For each location (y, x) of the layer's ``[h, w]`` grid and each sample, the change
    in the number of pixels having ``concept``, as a fraction of the image's pixels;
    the context of a sample at (y, x) is every non-empty label of the unedited
    segmentation at the centre pixel of that location's cell (the reference's rule).
    Returns sums: ``ctx_sum [h*w, L]``, ``ctx_sq [h*w, L]``, ``ctx_n [h*w, L]`` (per
    location and context label), ``loc_sum [h*w]``, ``loc_sq``, ``n`` and the grid.
    """
    units = np.asarray(units)
    values = np.asarray(values, np.float32)
    if units.shape != values.shape:
        raise ValueError(f"units {units.shape} and values {values.shape} differ in shape")
    head_j = jax.jit(split.head)
    params = split.params
    first = head_j(params, source.batch(0, 1))
    _, h, w, n_units = first.shape
    if units.size and (units.min() < 0 or units.max() >= n_units):
        raise ValueError(f"units must lie in [0, {n_units})")
    value = np.zeros((n_units,), np.float32)
    value[units] = values
    unit_mask = np.zeros((n_units,), np.float32)
    unit_mask[units] = 1
    locs = np.eye(h * w, dtype=np.float32).reshape(h * w, h, w, 1) * unit_mask  # [E,h,w,U]
    n_edits = h * w
    chunk = max(1, min(chunk, n_edits))
    pad = (-n_edits) % chunk
    alphas = np.concatenate([locs, np.zeros((pad, h, w, n_units), np.float32)])
    ys, xs = np.divmod(np.arange(n_edits + pad) % n_edits, w)
    value_j = jnp.asarray(value)

    def concept_share(images):
        return label_presence(segment(images), num_labels)[..., concept].mean(
            axis=(1, 2), dtype=jnp.float32)

    @jax.jit
    def base_step(params, acts):
        seg = segment(split.tail(params, acts, _unit_edit(jnp.zeros((n_units,)), value_j)))
        return seg, label_presence(seg, num_labels)[..., concept].mean(
            axis=(1, 2), dtype=jnp.float32)

    @jax.jit
    def step(params, acts, base_seg, base_share, alpha_chunk, cy, cx):
        hs, ws = base_seg.shape[2] // h, base_seg.shape[3] // w

        def one(alpha, y, x):
            d = concept_share(split.tail(params, acts, _unit_edit(alpha, value_j))) - base_share
            centre = jax.lax.dynamic_slice_in_dim(jax.lax.dynamic_slice_in_dim(
                base_seg, y * hs + hs // 2, 1, axis=2), x * ws + ws // 2, 1, axis=3)[:, :, 0, 0]
            ctx = (centre[..., None] == jnp.arange(num_labels).reshape(1, 1, -1)).any(1)
            ctx = ctx.at[:, 0].set(False).astype(jnp.float32)
            return (ctx * d[:, None]).sum(0), (ctx * (d * d)[:, None]).sum(0), ctx.sum(0), \
                d.sum(), (d * d).sum()

        return jax.vmap(one)(alpha_chunk, cy, cx)

    key = {"units": units, "values": values, "concept": concept, "L": num_labels,
           "bs": batch_size, "n": source.num_examples, "kind": "insertion"}
    acc = ResumableSum(cachefile, key, {
        "ctx_sum": np.zeros((n_edits, num_labels)), "ctx_sq": np.zeros((n_edits, num_labels)),
        "ctx_n": np.zeros((n_edits, num_labels), np.int64), "loc_sum": np.zeros((n_edits,)),
        "loc_sq": np.zeros((n_edits,)), "n": np.zeros((), np.int64)})
    for start, batch in acc.batches(source, batch_size, desc=desc, progress=progress):
        acts = head_j(params, batch)
        base_seg, base_share = base_step(params, acts)
        if base_seg.shape[2] % h or base_seg.shape[3] % w:
            raise ValueError(f"segmentation {base_seg.shape[2:]} is not a multiple of the "
                             f"layer grid {(h, w)}")
        parts = [np.zeros((n_edits + pad, num_labels)), np.zeros((n_edits + pad, num_labels)),
                 np.zeros((n_edits + pad, num_labels)), np.zeros(n_edits + pad),
                 np.zeros(n_edits + pad)]
        for i in range(0, n_edits + pad, chunk):
            out = step(params, acts, base_seg, base_share, jnp.asarray(alphas[i:i + chunk]),
                       jnp.asarray(ys[i:i + chunk]), jnp.asarray(xs[i:i + chunk]))
            for p, o in zip(parts, out):
                p[i:i + chunk] = np.asarray(o)
        acc.add(start, start + int(base_share.shape[0]), ctx_sum=parts[0][:n_edits],
                ctx_sq=parts[1][:n_edits], ctx_n=parts[2][:n_edits].round(),
                loc_sum=parts[3][:n_edits], loc_sq=parts[4][:n_edits],
                n=int(base_share.shape[0]))
    out = acc.result()
    out["grid"] = np.array([h, w])
    return out


def summarize_insertion(sums: dict, labels, min_count: int = 20) -> dict:
    """Mean concept share added per context label (pooled over locations), with
    standard errors; contexts seen fewer than ``min_count`` times are dropped."""
    s, q, n = sums["ctx_sum"].sum(0), sums["ctx_sq"].sum(0), sums["ctx_n"].sum(0)
    rows = []
    for label in range(1, len(n)):
        if n[label] < min_count:
            continue
        mean, se = mean_and_stderr(s[label], q[label], int(n[label]))
        rows.append({"label": int(label), "name": labels.names[label],
                     "category": labels.categories[label], "count": int(n[label]),
                     "mean_added": float(mean), "stderr": float(se)})
    rows.sort(key=lambda r: -r["mean_added"])
    h, w = map(int, sums["grid"])
    total = int(sums["n"])
    loc_mean, _ = mean_and_stderr(sums["loc_sum"], sums["loc_sq"], total)
    out = {"contexts": rows, "grid": [h, w], "samples": total,
           "per_location_mean_added": loc_mean.reshape(h, w).tolist()}
    # the paper's contrast is between objects at the edit (windows, buildings vs sky,
    # trees): compare the highest and lowest object contexts (all contexts if fewer)
    objs = [r for r in rows if r["category"] == "object"]
    pool = objs if len(objs) >= 2 else rows
    if len(pool) >= 2:
        hi, lo = pool[0], pool[-1]
        gap = hi["mean_added"] - lo["mean_added"]
        se = math.sqrt(hi["stderr"] ** 2 + lo["stderr"] ** 2)
        out["differs_by_context"] = {"highest": hi["name"], "lowest": lo["name"],
                                     "gap": gap, "z": gap / se if se > 0 else float("inf"),
                                     "significant_99": bool(gap > Z99 * se)}
    return out


# ---------------------------------------------------------------- the whole experiment

def run_experiment(split: Split, segment: Segment, source: ImageSource,
                   iou: np.ndarray, labels, high_values: np.ndarray, *,
                   remove_concepts: Sequence[int] = (), insert_concepts: Sequence[int] = (),
                   max_remove: int = 30, insert_units: int = 20, sweep_samples: int | None = None,
                   removal_samples: int | None = None, insertion_samples: int | None = None,
                   batch_size: int = 16, chunk: int = 16,
                   cache_dir: str | None = None, progress: bool = True) -> dict:
    """The paper's generator experiments; returns a JSON-ready dict.

    ``iou [units, L]`` from dissection; ``high_values [units]`` each unit's 99.5%
    quantile level. ``sweep_samples`` limits the per-unit sweep to the first samples
    (the reference used 10,000 for insertion and fewer for sweeps).
    """
    def cache(name):
        return None if cache_dir is None else os.path.join(cache_dir, name)

    iou = np.asarray(iou)
    n_units, n_labels = iou.shape
    kw = dict(batch_size=batch_size, chunk=chunk, progress=progress)
    sweep_src = source if sweep_samples is None else _Prefix(source, sweep_samples)
    per_unit = ablation_share_deltas(split, segment, sweep_src, np.eye(n_units),
                                     n_labels, cachefile=cache("unit_ablation.npz"),
                                     desc="per-unit ablation", **kw)
    n = int(per_unit["n"])
    base_mean, base_se = mean_and_stderr(per_unit["base"], per_unit["base_sq"], n)
    result = {"num_units": n_units, "labels": labels.to_json(),
              "baseline_share": base_mean.tolist(), "baseline_stderr": base_se.tolist(),
              "unit_ablation_delta": (per_unit["delta"] / max(n, 1)).tolist(),
              "unit_ablation_samples": n, "removal": {}, "insertion": {}}
    ns = list(range(0, min(max_remove, n_units) + 1))
    for c in remove_concepts:
        order = best_iou_units(iou, c, len(ns) - 1)
        masks = np.zeros((len(ns), n_units), np.float32)
        for i, k in enumerate(ns):
            masks[i, order[:k]] = 1
        removal_src = source if removal_samples is None else _Prefix(source, removal_samples)
        d = ablation_share_deltas(split, segment, removal_src, masks, n_labels,
                                  cachefile=cache(f"removal_{labels.names[c]}.npz"),
                                  desc=f"remove {labels.names[c]} units", **kw)
        curve = removal_curve(d, c, ns)
        curve["units"] = order.tolist()
        result["removal"][labels.names[c]] = curve
    for c in insert_concepts:
        units = best_iou_units(iou, c, min(insert_units, n_units))
        ins_src = source if insertion_samples is None else _Prefix(source, insertion_samples)
        sums = insertion_by_context(split, segment, ins_src, units,
                                    np.asarray(high_values)[units], c, n_labels,
                                    cachefile=cache(f"insertion_{labels.names[c]}.npz"),
                                    desc=f"insert {labels.names[c]} units", **kw)
        summary = summarize_insertion(sums, labels)
        summary["units"] = units.tolist()
        result["insertion"][labels.names[c]] = summary
    return result


class _Prefix:
    """The first ``n`` examples of a source."""

    def __init__(self, source, n):
        self.inner, self.num_examples = source, min(n, source.num_examples)
        self.seg_labels, self.class_names = source.seg_labels, source.class_names

    def batch(self, start, stop):
        return self.inner.batch(start, stop)
