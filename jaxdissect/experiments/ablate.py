"""The role of units in a classifier: what turning units off does to each class.

Follows the paper's classifier experiment (Bau et al. 2020, "Role of units in the
classifier"; the reference's ``experiment/intervention_experiment.py``):

* per-class precision, recall and balanced accuracy
  ``(recall + true-negative rate) / 2`` of the unedited model;
* single-unit ablation of every unit of one layer, measured on a train split, used
  to rank the units of each class by the damage their removal does (balanced
  accuracy, ties broken by the class's mean log-probability: see ``rank_units``);
* for every class, balanced accuracy on a val split with its k most important units
  removed together, and with only those k kept (all others removed);
* per unit, the number of classes it is important for: a unit is important for a
  class when it is among the class's ``important_cutoff = 4`` most damaging single
  units (the rule of the reference's notebook), set against the unit's IoU.

Every ablation is an ``Edit`` with ``alpha`` 1 on the removed units and value 0. The
layer's activations are computed once per batch (``head``); a stack of edits is then
run through only the layers after it (``tail``, ``model.apply(..., start=layer)``),
``jax.vmap``-ed over the stack, so a sweep over all units costs one head pass plus
the tails.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.data.source import ImageSource
from jaxdissect.edits import Edit, mask_chunks
from jaxdissect.runtime.resume import ResumableSum

#: the k of the paper's "k most important units" sweep
DEFAULT_KS = (1, 2, 3, 4, 5, 20, 64, 128, 256)
#: a unit is "important" for a class when among its this many most damaging units
IMPORTANT_CUTOFF = 4

class Split(NamedTuple):
    """A model cut at one layer. ``head(params, batch) -> acts [b, h, w, units]``;
    ``tail(params, acts, edit) -> output``, running only the layers after the cut.
    ``params`` are passed to the compiled steps as arguments (not baked in as
    constants, which would make XLA fold the weights at compile time).

    ``single_unit(params, acts) -> [units, b, classes]``, when given, is an exact
    shortcut for the tail with each single unit zeroed (see
    :func:`vgg_single_unit_tail`)."""

    head: Callable
    tail: Callable
    params: object
    single_unit: Callable | None = None


def split_classifier(model, params, layer: str, preprocess=None) -> Split:
    """Cut a classifier at ``layer`` under the model call contract: the head stops at
    ``layer`` (``stop=layer``), the tail starts after it (``start=layer``) with the edit
    applied to ``layer``'s output."""
    prep = preprocess or (lambda x: x)

    def head(p, batch):
        out, _ = model.apply({"params": p}, prep(jnp.asarray(batch["image"])), stop=layer)
        return out

    def tail(p, acts, edit):
        out, _ = model.apply({"params": p}, acts, edits={layer: edit}, start=layer)
        return out

    return Split(head, tail, params, vgg_single_unit_tail(model, layer))


def vgg_single_unit_tail(model, layer: str):
    """For a ``VGG16`` cut at the conv layer just before ``pool5``: the logits with each
    single unit zeroed, ``(params, acts [b,h,w,u]) -> [u, b, classes]``; else None.

    Zeroing channel c of the input of ``pool5`` zeroes channel c of ``pool5`` (a max
    over zeros) and of the average pool after it, leaving the other channels as they
    were. ``fc6`` is linear before its ReLU, so its pre-activation with c removed is
    the unedited one minus c's own contribution ``W6[:, c, :] @ pool_c``; all units'
    contributions together cost one ``fc6`` pass per image instead of one per
    (unit, image). ``fc7`` and ``fc8a`` then run as usual (``model.apply(...,
    start="fc6")``). The same numbers as the edited tail, up to float rounding.
    """
    from jaxdissect.models.vgg16 import VGG16, adaptive_avg_pool
    names = getattr(model, "layer_names", ())
    if not isinstance(model, VGG16) or "pool5" not in names or \
            names.index("pool5") != names.index(layer) + 1:
        return None

    def single_unit(params, acts):
        v = {"params": params}
        pooled, _ = model.apply(v, acts, start=layer, stop="pool5")
        q = adaptive_avg_pool(pooled, model.pool_hw)            # [b, P1, P2, u]
        b, p1, p2, u = q.shape
        qf = jnp.transpose(q, (0, 3, 1, 2)).reshape(b, u, p1 * p2)
        w = params["fc6"]["weight"].reshape(-1, u, p1 * p2)    # [out, u, P]
        own = jnp.einsum("bup,oup->ubo", qf, w)                 # [u, b, out]
        pre = own.sum(0) + params["fc6"]["bias"].reshape(1, -1)
        fc6 = jax.nn.relu(pre[None] - own)                      # [u, b, out]
        logits, _ = model.apply(v, fc6.reshape(u * b, -1), start="fc6")
        return logits.reshape(u, b, -1)

    return single_unit


# ---------------------------------------------------------------- per-class metrics

@dataclasses.dataclass(frozen=True)
class ClassMetrics:
    """Per-class binary-classification metrics; arrays ``[..., classes]``."""

    precision: np.ndarray
    recall: np.ndarray
    accuracy: np.ndarray
    true_negative_rate: np.ndarray
    balanced_accuracy: np.ndarray

    def to_json(self) -> dict:
        return {k: _nan_to_none(v) for k, v in dataclasses.asdict(self).items()}

    def row(self, i: int) -> "ClassMetrics":
        """The metrics ``[C]`` of edit ``i`` of a stack."""
        return ClassMetrics(**{k: v[i] for k, v in dataclasses.asdict(self).items()})


def _nan_to_none(a):
    a = np.asarray(a, np.float64)
    return [None if math.isnan(v) else float(v) for v in a.ravel()] if a.ndim <= 1 else \
        [_nan_to_none(r) for r in a]


def metrics_from_counts(true_counts, pred_counts, correct_counts, total) -> ClassMetrics:
    """Per-class metrics from integer counts (the reference's ``test_perclass_pra``).

    ``true_counts [C]`` examples of each class, ``pred_counts [..., C]`` predictions of
    each class, ``correct_counts [..., C]`` correct predictions of each class, ``total``
    examples. Undefined ratios (no prediction / no example of a class) are NaN.
    """
    t = np.asarray(true_counts, np.float64)
    p = np.asarray(pred_counts, np.float64)
    k = np.asarray(correct_counts, np.float64)
    n = float(total)
    tn = (n - t) - (p - k)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(p > 0, k / p, np.nan)
        recall = np.where(t > 0, k / t, np.nan)
        tnr = np.where(n - t > 0, tn / (n - t), np.nan)
    return ClassMetrics(precision, recall, (k + tn) / n, tnr, (recall + tnr) / 2)


def _class_counts(logits, labels, num_classes):
    """Predictions per class, correct predictions per class, and per true class the
    sum of the log-probability given to it (``[C]`` each)."""
    pred = jnp.argmax(logits, axis=-1)
    onehot_pred = jax.nn.one_hot(pred, num_classes, dtype=jnp.int32)
    hit = (pred == labels).astype(jnp.int32)
    onehot_true = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    logp = jnp.sum(jax.nn.log_softmax(logits.astype(jnp.float32), -1) * onehot_true, -1)
    return onehot_pred.sum(0), (onehot_pred * hit[:, None]).sum(0), \
        (onehot_true * logp[:, None]).sum(0)


# ---------------------------------------------------------------- the sweep engine

def ablation_masks_counts(split: Split, source: ImageSource, masks: np.ndarray,
                          num_classes: int, *, batch_size: int = 32, chunk: int = 64,
                          cachefile: str | None = None, desc: str = "ablate",
                          progress: bool = True) -> dict:
    """Classification counts of the model with each row of ``masks`` ablated.

    ``masks [E, units]`` in [0, 1]: the ``alpha`` of an edit with value 0 (1 = unit
    removed). Activations are computed once per batch; the E edits run through the
    tail ``chunk`` at a time, vmapped. Returns integer arrays ``true [C]``,
    ``pred [E, C]``, ``correct [E, C]`` and ``total``. With ``cachefile`` the running
    sums are saved after each batch, so a killed run resumes where it stopped.
    """
    masks, padded, pad = mask_chunks(masks, chunk)
    n_edits, n_units = masks.shape
    chunk = padded.shape[1]

    @jax.jit
    def step(params, acts, labels, mask_chunk):
        if acts.shape[-1] != n_units:
            raise ValueError(f"layer has {acts.shape[-1]} units but masks have {n_units}")

        def one(alpha):
            a = alpha.reshape(1, 1, 1, -1)  # NHWC broadcast without rank promotion
            out = split.tail(params, acts, Edit(a, jnp.zeros_like(a)))
            return _class_counts(out, labels, num_classes)

        return jax.vmap(one)(mask_chunk)

    # one-hot rows (a single-unit sweep) can take the split's exact shortcut: every
    # unit's logits at once per batch, then the rows' units are read out
    onehot = (split.single_unit is not None and np.isin(masks, (0.0, 1.0)).all()
              and (masks.sum(1) == 1).all())
    if onehot:
        unit_of = jnp.asarray(masks.argmax(1))

        @jax.jit
        def fast_step(params, acts, labels):
            logits = split.single_unit(params, acts)[unit_of]
            return jax.vmap(lambda o: _class_counts(o, labels, num_classes))(logits)

    head_j = jax.jit(split.head)
    key = {"masks": masks, "num_classes": num_classes, "batch_size": batch_size,
           "n": source.num_examples}
    acc = ResumableSum(cachefile, key, {
        "true": np.zeros((num_classes,), np.int64),
        "pred": np.zeros((n_edits, num_classes), np.int64),
        "correct": np.zeros((n_edits, num_classes), np.int64),
        "logp": np.zeros((n_edits, num_classes)),
        "total": np.zeros((), np.int64)})
    for start, batch in acc.batches(source, batch_size, desc=desc, progress=progress):
        labels = jnp.asarray(batch["label"], jnp.int32)
        if int(np.max(batch["label"])) >= num_classes or int(np.min(batch["label"])) < 0:
            raise ValueError(f"class labels must lie in [0, {num_classes})")
        acts = head_j(split.params, {k: v for k, v in batch.items() if k == "image"})
        pred = np.zeros((n_edits + pad, num_classes), np.int64)
        corr = np.zeros_like(pred)
        logp = np.zeros((n_edits + pad, num_classes))
        if onehot:
            p, c, lp = fast_step(split.params, acts, labels)
            pred[:n_edits], corr[:n_edits], logp[:n_edits] = p, c, lp
        else:
            for i, mc in enumerate(padded):
                sl = slice(i * chunk, (i + 1) * chunk)
                pred[sl], corr[sl], logp[sl] = step(split.params, acts, labels,
                                                    jnp.asarray(mc))
        acc.add(start, batch_stop=start + len(batch["label"]), true=np.bincount(
            batch["label"], minlength=num_classes), pred=pred[:n_edits],
            correct=corr[:n_edits], logp=logp[:n_edits], total=len(batch["label"]))
    return acc.result()


def measure(split: Split, source: ImageSource, masks: np.ndarray, num_classes: int,
            **kw) -> ClassMetrics:
    """Per-class metrics ``[E, C]`` with each row of ``masks`` ablated."""
    c = ablation_masks_counts(split, source, masks, num_classes, **kw)
    return metrics_from_counts(c["true"], c["pred"], c["correct"], c["total"])


# ---------------------------------------------------------------- rankings and sets

def rank_units(single_ba: np.ndarray, baseline_ba: np.ndarray,
               single_logp: np.ndarray | None = None) -> np.ndarray:
    """``[C, units]``: per class, units from most to least damaging when removed alone.

    ``single_ba [units, C]`` balanced accuracy with each unit removed, ``baseline_ba
    [C]``: the reference ranks by the change in balanced accuracy alone. A redundant
    network can leave (nearly) every single-unit change at zero (the shipped world
    classifier does for 124 of its 128 conv5_3 units), so
    ties are broken by ``single_logp [units, C]``, the class's mean log-probability
    on its own examples with the unit removed (lower = more damaging); remaining ties
    keep the lower unit index first. NaN ranks last.
    """
    damage = np.nan_to_num(np.asarray(single_ba, np.float64) - baseline_ba[None, :], nan=np.inf)
    if single_logp is None:
        return np.argsort(damage, axis=0, kind="stable").T
    lp = np.nan_to_num(np.asarray(single_logp, np.float64), nan=np.inf)
    units = np.arange(damage.shape[0])
    return np.stack([np.lexsort((units, lp[:, c], damage[:, c]))
                     for c in range(damage.shape[1])])


def class_set_masks(ranking: np.ndarray, ks: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Masks ``[C, len(ks), units]`` removing each class's k most important units, and
    masks removing all units but those k."""
    n_classes, n_units = ranking.shape
    rank_pos = np.empty_like(ranking)
    rank_pos[np.arange(n_classes)[:, None], ranking] = np.arange(n_units)[None, :]
    ks = np.asarray(ks)
    remove = (rank_pos[:, None, :] < ks[None, :, None]).astype(np.float32)
    return remove, 1.0 - remove


def unit_importance_counts(ranking: np.ndarray, cutoff: int = IMPORTANT_CUTOFF) -> np.ndarray:
    """``[units]``: for how many classes each unit is among the ``cutoff`` most damaging."""
    return np.bincount(ranking[:, :cutoff].ravel(), minlength=ranking.shape[1])


def importance_vs_iou(counts: np.ndarray, iou: np.ndarray, tail: int = 7) -> dict:
    """Mean best IoU (and its standard error) of the units important for 0, 1, ...,
    ``>= tail`` classes, as in the paper's figure."""
    rows = []
    for n in range(tail + 1):
        sel = counts >= tail if n == tail else counts == n
        v = np.asarray(iou, np.float64)[sel]
        rows.append({"classes": n, "at_least": n == tail, "units": int(sel.sum()),
                     "mean_iou": float(v.mean()) if v.size else None,
                     "stderr": float(v.std() / math.sqrt(v.size)) if v.size > 1 else None})
    return {"cutoff": IMPORTANT_CUTOFF, "rows": rows}


# ---------------------------------------------------------------- the whole experiment

def run_experiment(split: Split, train: ImageSource, val: ImageSource,
                   num_units: int, num_classes: int, *, ks: Sequence[int] = DEFAULT_KS,
                   curve_classes: Sequence[int] = (), unit_iou: np.ndarray | None = None,
                   batch_size: int = 32, chunk: int = 64, cache_dir: str | None = None,
                   progress: bool = True) -> dict:
    """The paper's classifier ablation experiment; returns a JSON-ready dict.

    Ranks units per class on ``train`` by single-unit ablation, then measures on
    ``val`` each class's balanced accuracy with its k most important units removed
    and with only those kept, for ``ks`` (capped at ``num_units``), and for every k in
    1..units-1 for ``curve_classes``. ``unit_iou [units]`` (best IoU of each unit from
    dissection) adds the importance-versus-IoU table.
    """
    import os

    def cache(name):
        return None if cache_dir is None else os.path.join(cache_dir, name)

    kw = dict(batch_size=batch_size, chunk=chunk, progress=progress)
    none = np.zeros((1, num_units), np.float32)
    base_train = measure(split, train, none, num_classes, cachefile=cache(
        "baseline_train.npz"), desc="baseline (train)", **kw).row(0)
    base_val = measure(split, val, none, num_classes, cachefile=cache(
        "baseline_val.npz"), desc="baseline (val)", **kw).row(0)
    sc = ablation_masks_counts(split, train, np.eye(num_units, dtype=np.float32), num_classes,
                               cachefile=cache("single_unit_train.npz"),
                               desc="single-unit ablation (train)", **kw)
    single = metrics_from_counts(sc["true"], sc["pred"], sc["correct"], sc["total"])
    with np.errstate(divide="ignore", invalid="ignore"):
        single_logp = sc["logp"] / sc["true"][None, :].astype(np.float64)
    b_train = base_train.balanced_accuracy
    ranking = rank_units(single.balanced_accuracy, b_train, single_logp)
    ks = sorted({min(int(k), num_units) for k in ks if k >= 1})
    remove, keep = class_set_masks(ranking, ks)
    # One stack: [C, ks, 2, units] -> rows; every row's counts cover all classes,
    # but only the class the set was built for is read.
    stack = np.stack([remove, keep], axis=2).reshape(-1, num_units)
    sets = measure(split, val, stack, num_classes, cachefile=cache("class_sets_val.npz"),
                   desc="class unit sets (val)", **kw)
    ba = sets.balanced_accuracy.reshape(num_classes, len(ks), 2, num_classes)
    diag = ba[np.arange(num_classes), :, :, np.arange(num_classes)]  # [C, ks, 2]
    result = {
        "num_units": num_units, "num_classes": num_classes, "ks": ks,
        "baseline_train": base_train.to_json(), "baseline_val": base_val.to_json(),
        "single_unit_ba_train": _nan_to_none(single.balanced_accuracy),
        "single_unit_logp_train": _nan_to_none(single_logp),
        "rank_by": "change in balanced accuracy (train), ties broken by the class's mean "
                   "log-probability on its own examples",
        "ranking": ranking.tolist(),
        "removed_top_k_ba": _nan_to_none(diag[:, :, 0]),
        "kept_top_k_ba": _nan_to_none(diag[:, :, 1]),
    }
    curves = {}
    all_k = np.arange(1, num_units)
    for c in curve_classes:
        rm, kp = class_set_masks(ranking[c:c + 1], all_k)
        cm = measure(split, val, np.concatenate([rm[0], kp[0]]), num_classes,
                     cachefile=cache(f"curve_class{c}_val.npz"), desc=f"curve class {c}", **kw)
        b = cm.balanced_accuracy[:, c]
        curves[str(c)] = {"k": all_k.tolist(), "removed": _nan_to_none(b[:len(all_k)]),
                          "kept": _nan_to_none(b[len(all_k):])}
    result["curves"] = curves
    counts = unit_importance_counts(ranking)
    result["importance_counts"] = counts.tolist()
    if unit_iou is not None:
        result["importance_vs_iou"] = importance_vs_iou(counts, unit_iou)
    result["summary"] = summarize(result)
    return result


def summarize(result: dict, k: int = 20) -> dict:
    """The paper's headline numbers for set size ``k`` (capped at the unit count)."""
    ks = result["ks"]
    k = min(k, result["num_units"])
    if k not in ks:
        k = max(x for x in ks if x <= k)
    i = ks.index(k)
    base = np.array(result["baseline_val"]["balanced_accuracy"], dtype=np.float64)
    rm = np.array([r[i] for r in result["removed_top_k_ba"]], dtype=np.float64)
    kp = np.array([r[i] for r in result["kept_top_k_ba"]], dtype=np.float64)
    chance = 0.5
    ok = ~np.isnan(base) & ~np.isnan(rm) & ~np.isnan(kp)
    mb, mr, mk = base[ok].mean(), rm[ok].mean(), kp[ok].mean()
    toward_chance = (mb - mr) / (mb - chance) if mb > chance else float("nan")
    # the smallest set size whose removal moves the mean halfway to chance
    k_half = None
    for j, kk in enumerate(ks):
        col = np.array([r[j] for r in result["removed_top_k_ba"]], dtype=np.float64)
        if mb > chance and (mb - col[ok].mean()) / (mb - chance) >= 0.5:
            k_half = kk
            break
    return {"k": k, "k_halfway_to_chance": k_half, "mean_baseline_ba": float(mb),
            "mean_removed_ba": float(mr),
            "mean_kept_ba": float(mk), "fraction_of_way_to_chance": float(toward_chance),
            "kept_fraction_of_baseline": float(mk / mb),
            "removal_moves_halfway_to_chance": bool(toward_chance >= 0.5),
            "keeping_retains_80pct": bool(mk / mb >= 0.8)}
