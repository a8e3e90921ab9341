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

The result is an ``AblationResult``; its ``findings()`` test the paper's two claims
(removal moves mean balanced accuracy at least halfway to chance, keeping only the
k units retains at least 80% of it) against 99% Poisson-bootstrap intervals over the
val images: a finding holds only when the whole interval clears its criterion.

Every ablation is an ``Edit`` with ``alpha`` 1 on the removed units and value 0. The
layer's activations are computed once per batch (``head``); a stack of edits is then
run through only the layers after it (``tail``, ``spec.resume`` from the layer),
``vmap``-ed over chunks of the stack (``lax.map``) inside one compiled step, so a sweep
over all units costs one head pass plus the tails. Every measurement is one
``runtime.sweep`` into a ``ClassTally`` (integer counts, exact fixed-point sums): the
same on any number of devices and processes, resumable from its checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdissect.data.source import ImageSource
from jaxdissect.edits import Edit
from jaxdissect.experiments import results
from jaxdissect.experiments.significance import (
    LEVEL,
    Finding,
    bootstrap_interval,
    pct,
    poisson_weights,
)
from jaxdissect.runtime import sweep
from jaxdissect.runtime.cache import RunCache
from jaxdissect.runtime.fingerprint import data_identity, fingerprint
from jaxdissect.stats import kernels
from jaxdissect.stats.fixed import FixedSum, merge_fields, numpy_fields, parts

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
    :func:`jaxdissect.models.vgg16.single_unit_tail`)."""

    head: Callable
    tail: Callable
    params: object
    single_unit: Callable | None = None


def split_classifier(spec, layer: str) -> Split:
    """Cut a classifier (a :class:`~jaxdissect.spec.ModelSpec`) at ``layer``: the head
    computes ``layer``'s activation from ``batch["image"]``, the tail resumes from it
    with the edit applied there (``spec.resume``: under ``jit`` only the layers after
    the cut run)."""

    def head(p, batch):
        return spec.activations(p, jnp.asarray(batch["image"]), layer)

    def tail(p, acts, edit):
        return spec.resume(p, layer, acts, edits={layer: edit})

    fast = spec.single_unit_tail(spec, layer) if spec.single_unit_tail else None
    return Split(head, tail, spec.params, fast)


# ---------------------------------------------------------------- per-class metrics

@results.typed
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

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and all(
            np.array_equal(a, b, equal_nan=True) for a, b in
            zip(dataclasses.astuple(self), dataclasses.astuple(other)))


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


@struct.dataclass
class ClassTally:
    """Classification counts of a classifier under ``E`` edits (``C`` classes).

    ``true [C]`` examples of each class, ``total``; per edit ``pred [E, C]``
    predictions of each class and ``correct [E, C]`` correct ones (int32); per edit
    and true class, exact fixed-point sums (``stats.fixed``) of the log-probability
    of the true class ``logp [E, C]`` and of its logit's drop from the unedited
    model ``drop [E, C]``. With ``B`` bootstrap replicates, per replicate (Poisson
    weights of each example's index) ``boot_true [B, C]``, ``boot_total [B]`` and,
    for each edit's focus class, ``boot_pred [B, E]`` and ``boot_correct [B, E]``.
    ``bad``: examples whose label lies outside ``[0, C)``.
    """

    true: jnp.ndarray
    total: jnp.ndarray
    pred: jnp.ndarray
    correct: jnp.ndarray
    logp: FixedSum
    drop: FixedSum
    boot_true: jnp.ndarray
    boot_total: jnp.ndarray
    boot_pred: jnp.ndarray
    boot_correct: jnp.ndarray
    bad: jnp.ndarray

    @classmethod
    def empty(cls, edits: int, classes: int, replicates: int = 0) -> "ClassTally":
        i = lambda *shape: jnp.zeros(shape, jnp.int32)  # noqa: E731
        return cls(i(classes), i(), i(edits, classes), i(edits, classes),
                   FixedSum.zeros((edits, classes)), FixedSum.zeros((edits, classes)),
                   i(replicates, classes), i(replicates), i(replicates, edits),
                   i(replicates, edits), i())

    def update(self, logits, base, labels, valid, focus, weights) -> "ClassTally":
        """Adds a batch: ``logits [E, b, C]`` edited, ``base [b, C]`` unedited,
        ``labels [b]``, ``valid [b]``, ``focus [E]``, ``weights [b, B]`` int32."""
        classes = self.true.shape[0]
        ok = valid & (labels >= 0) & (labels < classes)
        true = jax.nn.one_hot(labels, classes, dtype=jnp.int32) * ok[:, None]   # [b, C]
        base_true = jnp.sum(base * true, -1)                                    # [b]
        w = weights * ok[:, None]                                               # [b, B]

        def one(out, f):                       # one edit's logits [b, C]
            pred = jax.nn.one_hot(jnp.argmax(out, -1), classes, dtype=jnp.int32) * ok[:, None]
            logp = jnp.sum(jax.nn.log_softmax(out.astype(jnp.float32), -1) * true, -1)
            drop = base_true - jnp.sum(out * true, -1)
            is_f = pred[:, f]
            return (pred.sum(0), (pred * true).sum(0),
                    parts(logp[:, None] * true, self.logp.bits),
                    parts(drop[:, None] * true, self.drop.bits),
                    w.T @ is_f, w.T @ (is_f * true[:, f]))

        pred, correct, lp, dr, bp, bc = jax.vmap(one)(logits, focus)
        return ClassTally(
            self.true + true.sum(0), self.total + ok.sum(dtype=jnp.int32),
            self.pred + pred, self.correct + correct, self.logp.add_parts(*lp),
            self.drop.add_parts(*dr), self.boot_true + w.T @ true, self.boot_total + w.sum(0),
            self.boot_pred + bp.T, self.boot_correct + bc.T,
            self.bad + (valid & ~ok).sum(dtype=jnp.int32))

    def merge(self, other: "ClassTally") -> "ClassTally":
        return merge_fields(self, other)

    def compute(self) -> dict:
        """NumPy counts (int64) and sums (float64), as ``ablation_masks_counts`` returns."""
        return numpy_fields(self)


def ablation_masks_counts(split: Split, source: ImageSource, masks: np.ndarray,
                          num_classes: int, *, batch_size: int = 32, chunk: int = 64,
                          cache: RunCache | None = None, name: str = "ablate",
                          progress: bool = True,
                          focus: np.ndarray | None = None, replicates: int = 0,
                          seed: int = 0, devices=None, checkpoint_every: int = 20) -> dict:
    """Classification counts of the model with each row of ``masks`` ablated.

    ``masks [E, units]`` in [0, 1]: the ``alpha`` of an edit with value 0 (1 = unit
    removed). One ``runtime.sweep`` over ``source`` (its process's slice, every local
    device): per batch the layer is computed once (``split.head``), the stack of
    edits runs through the tail inside the step, ``chunk`` edits at a time
    (``lax.map``), and a ``ClassTally`` adds the counts. Returns
    ``ClassTally.compute()``: ``true [C]``, ``pred [E, C]``, ``correct [E, C]``,
    ``logp`` and ``drop [E, C]`` (sums over each class's examples), ``total``, and
    the bootstrap counts. With ``cache`` (the run's ``runtime.cache.RunCache``) the
    sweep checkpoints under ``name``, keyed by the run's identity, the weights'
    fingerprint, the data's identity, the masks and every setting here, so a killed
    run resumes where it stopped.

    ``focus [E]`` (one class per edit) with ``replicates`` B > 0 adds Poisson-bootstrap
    counts (``significance.poisson_weights`` of each example's index, ``seed``).
    """
    masks = np.asarray(masks, np.float32)
    if masks.ndim != 2:
        raise ValueError(f"masks must be [edits, units], got shape {masks.shape}")
    n_edits, n_units = masks.shape
    focus = np.zeros(n_edits, np.int32) if focus is None else np.asarray(focus, np.int32)
    if focus.shape != (n_edits,):
        raise ValueError(f"focus must give one class per edit ({n_edits}), got {focus.shape}")
    chunk = max(1, min(chunk, n_edits))
    # one-hot rows (a single-unit sweep) can take the split's exact shortcut: every
    # unit's logits at once per batch, then the rows' units are read out
    onehot = bool(split.single_unit is not None and np.isin(masks, (0.0, 1.0)).all()
                  and (masks.sum(1) == 1).all())
    unit_of = masks.argmax(1).astype(np.int32)

    def step(stat, batch, params, masks, focus, unit_of):
        acts = split.head(params, batch)
        if acts.shape[-1] != n_units:
            raise ValueError(f"layer has {acts.shape[-1]} units but masks have {n_units}")
        zero = jnp.zeros((1, 1, 1, n_units), acts.dtype)
        base = split.tail(params, acts, Edit(zero, zero))
        if base.shape[-1] != num_classes:
            raise ValueError(f"the model scores {base.shape[-1]} classes but num_classes is "
                             f"{num_classes}")
        if onehot:
            logits = split.single_unit(params, acts)[unit_of]
        else:
            def one(alpha):
                a = alpha.reshape(1, 1, 1, -1)  # NHWC broadcast without rank promotion
                return split.tail(params, acts, Edit(a, jnp.zeros_like(a)))
            logits = jax.lax.map(one, masks, batch_size=chunk)
        index = batch["index"]
        weights = poisson_weights(index, replicates, seed) if replicates else \
            jnp.zeros((index.shape[0], 0), jnp.int32)
        return stat.update(logits, base, batch["label"].astype(jnp.int32), batch["valid"],
                           focus, weights)

    key = None
    if cache is not None:
        key = cache.key("ablation", weights=fingerprint(split.params),
                        data=data_identity(source), masks=masks, focus=focus,
                        classes=num_classes, replicates=replicates, seed=seed,
                        shortcut=onehot)
    stat = sweep.sweep(step, ClassTally.empty(n_edits, num_classes, replicates), source,
                       batch_size=batch_size, replicated=(split.params, masks, focus, unit_of),
                       name=name, key=key, cache_dir=None if cache is None else cache.folder,
                       checkpoint_every=checkpoint_every, progress=progress, devices=devices)
    out = stat.compute()
    if out["bad"]:
        raise ValueError(f"class labels must lie in [0, {num_classes}); {out['bad']} do not")
    return out


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


# ---------------------------------------------------------------- the typed result

@results.typed
@dataclasses.dataclass(frozen=True)
class ClassCurve:
    """One class's balanced accuracy (val) with its k most important units removed /
    only they kept, for every ``k [m]``."""

    k: np.ndarray
    removed: np.ndarray
    kept: np.ndarray

    def to_json(self) -> dict:
        return {"k": self.k.tolist(), "removed": _nan_to_none(self.removed),
                "kept": _nan_to_none(self.kept)}


@results.typed
@dataclasses.dataclass(frozen=True)
class AblationResult(results.Saved):
    """The paper's classifier ablation experiment on one layer (``u`` units, ``C``
    classes, ``K`` set sizes ``ks``).

    ``baseline_train`` / ``baseline_val``: per-class metrics ``[C]`` of the unedited
    model; ``single_unit_ba_train`` / ``single_unit_logp_train [u, C]``: balanced
    accuracy and mean log-probability of each class on its own train examples with
    each unit removed alone; ``ranking [C, u]``: per class, units from most to least
    important (``rank_units``); ``removed_top_k_ba`` / ``kept_top_k_ba [C, K]``: each
    class's balanced accuracy on val with its k most important units removed / only
    they kept; ``curves``: the same for every k, for chosen classes;
    ``importance_counts [u]``; ``unit_iou [u]`` (dissection's best IoU) or None;
    ``train_examples``, ``val_examples``, ``val_class_counts [C]``: the sample
    sizes; ``bootstrap [B, K, 3]``: per Poisson-bootstrap replicate of the val
    images, the mean over classes of balanced accuracy unedited, removed and kept
    (the intervals of the findings), ``seed`` its seed.
    """

    layer: str
    class_names: tuple
    ks: tuple
    baseline_train: ClassMetrics
    baseline_val: ClassMetrics
    single_unit_ba_train: np.ndarray
    single_unit_logp_train: np.ndarray
    ranking: np.ndarray
    removed_top_k_ba: np.ndarray
    kept_top_k_ba: np.ndarray
    curves: dict
    importance_counts: np.ndarray
    unit_iou: np.ndarray | None
    train_examples: int
    val_examples: int
    val_class_counts: np.ndarray
    bootstrap: np.ndarray
    seed: int = 0

    rank_by = ("change in balanced accuracy (train), ties broken by the class's mean "
               "log-probability on its own examples")

    @property
    def num_units(self) -> int:
        return int(self.ranking.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.ranking.shape[0])

    def _k_index(self, k: int) -> int:
        """Index into ``ks`` of the largest measured set size <= ``k`` (capped at u)."""
        k = min(k, self.num_units)
        return max(i for i, x in enumerate(self.ks) if x <= k) if min(self.ks) <= k else 0

    def _classes(self) -> np.ndarray:
        """``[C]`` bool: classes whose baseline and set measurements are all defined."""
        base = self.baseline_val.balanced_accuracy
        return ~np.isnan(base) & ~np.isnan(self.removed_top_k_ba).any(1) & \
            ~np.isnan(self.kept_top_k_ba).any(1)

    def summary(self, k: int = 20) -> dict:
        """The paper's headline numbers for set size ``k`` (the largest measured set
        size <= ``k``), with 99% bootstrap intervals of the baseline and the ratios:
        removal as the fraction of the way from the baseline to chance, keeping as the
        share of the baseline's margin over chance that remains (both relative to
        chance, so a model at chance has neither)."""
        i = self._k_index(k)
        ok = self._classes()
        mb = float(self.baseline_val.balanced_accuracy[ok].mean())
        mr = float(self.removed_top_k_ba[ok, i].mean())
        mk = float(self.kept_top_k_ba[ok, i].mean())
        toward = _toward_chance(mb, mr)
        k_half = next((kk for j, kk in enumerate(self.ks)
                       if _toward_chance(mb, float(self.removed_top_k_ba[ok, j].mean())) >= 0.5),
                      None)
        b = self.bootstrap[:, i]
        with np.errstate(divide="ignore", invalid="ignore"):
            above = b[:, 0] > CHANCE
            toward_r = np.where(above, (b[:, 0] - b[:, 1]) / (b[:, 0] - CHANCE), np.nan)
            margin_r = np.where(above, (b[:, 2] - CHANCE) / (b[:, 0] - CHANCE), np.nan)
            kept_r = b[:, 2] / b[:, 0]
        return {"k": int(self.ks[i]), "k_halfway_to_chance": k_half,
                "classes": int(ok.sum()), "val_examples": self.val_examples,
                "replicates": int(len(self.bootstrap)),
                "mean_baseline_ba": mb, "mean_baseline_ba_ci99": bootstrap_interval(b[:, 0]),
                "mean_removed_ba": mr, "mean_kept_ba": mk,
                "fraction_of_way_to_chance": toward,
                "fraction_of_way_to_chance_ci99": bootstrap_interval(toward_r, LEVEL),
                "kept_share_of_margin": (mk - CHANCE) / (mb - CHANCE) if mb > CHANCE
                else float("nan"),
                "kept_share_of_margin_ci99": bootstrap_interval(margin_r, LEVEL),
                "kept_fraction_of_baseline": mk / mb,
                "kept_fraction_of_baseline_ci99": bootstrap_interval(kept_r, LEVEL)}

    def findings(self, k: int = 20) -> list[Finding]:
        """The paper's two findings at set size ``k``; each holds when the 99%
        bootstrap interval (over val images) lies above its criterion. Neither
        applies unless the unedited model's mean balanced accuracy is above chance
        (the whole interval): removing or keeping units of a model that knows
        nothing measures nothing."""
        s = self.summary(k)
        kk, n, c = s["k"], self.val_examples, s["classes"]
        b_lo, b_hi = s["mean_baseline_ba_ci99"]
        removal_text = (f"Removing each class's {kk} most important units brings mean "
                        f"balanced accuracy at least halfway to chance (50%). Paper: 76.6% "
                        f"to 53.0% for VGG-16 on Places365.")
        keep_text = (f"Keeping only those {kk} units keeps at least half of the baseline's "
                     f"margin over chance. Paper: 73.0% of 76.6% (86% of the margin).")
        if not c or not b_lo > CHANCE:
            why = (f"the unedited model's mean balanced accuracy over {c} classes on {n} val "
                   f"images is {pct(s['mean_baseline_ba'])} (99% bootstrap interval "
                   f"{pct(b_lo)} to {pct(b_hi)}), not above chance (50%)")
            return [Finding.not_applicable(removal_text, why, samples=n, criterion=0.5),
                    Finding.not_applicable(keep_text, why, samples=n, criterion=0.5)]
        lo, hi = s["fraction_of_way_to_chance_ci99"]
        half = (f"The smallest set size measured that gets halfway is k = "
                f"{s['k_halfway_to_chance']}." if s["k_halfway_to_chance"] is not None
                else "No measured set size gets halfway.")
        removal = Finding(
            f"Removing each class's {kk} most important units (ranked on "
            f"{self.train_examples} train images) lowers mean balanced accuracy over {c} "
            f"classes on {n} val images from {pct(s['mean_baseline_ba'])} (99% interval "
            f"{pct(b_lo)} to {pct(b_hi)}) to {pct(s['mean_removed_ba'])}: "
            f"{pct(s['fraction_of_way_to_chance'])} of the way to chance (50%; 99% bootstrap "
            f"interval {pct(lo)} to {pct(hi)}). Paper: 76.6% to 53.0% for VGG-16 on "
            f"Places365; criterion: at least halfway, the whole interval. " + half,
            holds=bool(lo >= 0.5), estimate=s["fraction_of_way_to_chance"], low=lo, high=hi,
            criterion=0.5, samples=n)
        lo, hi = s["kept_share_of_margin_ci99"]
        keep = Finding(
            f"Keeping only those {kk} units (all {self.num_units - kk} others removed) gives "
            f"{pct(s['mean_kept_ba'])}: {pct(s['kept_share_of_margin'])} of the baseline's "
            f"margin over chance remains (99% bootstrap interval {pct(lo)} to {pct(hi)}, "
            f"{n} val images). Paper: 73.0% of 76.6%, 86% of the margin; criterion: at "
            f"least half the margin, the whole interval.",
            holds=bool(lo >= 0.5), estimate=s["kept_share_of_margin"], low=lo, high=hi,
            criterion=0.5, samples=n)
        return [removal, keep]

    def importance_vs_iou(self) -> dict | None:
        return None if self.unit_iou is None else \
            importance_vs_iou(self.importance_counts, self.unit_iou)

    def to_json(self) -> dict:
        """What ``ablation.json`` holds (NaN as null)."""
        out = {
            "layer": self.layer, "class_names": list(self.class_names),
            "kernels": kernels.mode(),
            "num_units": self.num_units, "num_classes": self.num_classes,
            "ks": [int(k) for k in self.ks],
            "samples": {"train": self.train_examples, "val": self.val_examples,
                        "val_per_class": self.val_class_counts.tolist(),
                        "bootstrap_replicates": int(len(self.bootstrap))},
            "baseline_train": self.baseline_train.to_json(),
            "baseline_val": self.baseline_val.to_json(),
            "single_unit_ba_train": _nan_to_none(self.single_unit_ba_train),
            "single_unit_logp_train": _nan_to_none(self.single_unit_logp_train),
            "rank_by": self.rank_by, "ranking": self.ranking.tolist(),
            "removed_top_k_ba": _nan_to_none(self.removed_top_k_ba),
            "kept_top_k_ba": _nan_to_none(self.kept_top_k_ba),
            "curves": {str(c): cv.to_json() for c, cv in self.curves.items()},
            "importance_counts": self.importance_counts.tolist(),
            "summary": results.jsonable(self.summary()),
            "findings": [f.to_json() for f in self.findings()],
        }
        if self.unit_iou is not None:
            out["importance_vs_iou"] = self.importance_vs_iou()
        return out



CHANCE = 0.5


def _toward_chance(base: float, removed: float) -> float:
    return (base - removed) / (base - CHANCE) if base > CHANCE else float("nan")


def _focus_ba(true, pred, correct, total):
    """Balanced accuracy of a focus class from its counts (broadcasting arrays)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(true > 0, correct / true, np.nan)
        neg = total - true
        tnr = np.where(neg > 0, (neg - (pred - correct)) / neg, np.nan)
    return (recall + tnr) / 2


# ---------------------------------------------------------------- the whole experiment

def run_experiment(split: Split, train: ImageSource, val: ImageSource,
                   num_units: int, num_classes: int, *, ks: Sequence[int] = DEFAULT_KS,
                   curve_classes: Sequence[int] = (), unit_iou: np.ndarray | None = None,
                   class_names: Sequence[str] | None = None, layer: str = "",
                   replicates: int = 200, seed: int = 0,
                   batch_size: int = 32, chunk: int = 64, cache: RunCache | None = None,
                   progress: bool = True, devices=None) -> AblationResult:
    """The paper's classifier ablation experiment.

    Ranks units per class on ``train`` by single-unit ablation, then measures on
    ``val`` each class's balanced accuracy with its k most important units removed
    and with only those kept, for ``ks`` (capped at ``num_units``), and for every k in
    1..units-1 for ``curve_classes``. ``unit_iou [units]`` (best IoU of each unit from
    dissection) adds the importance-versus-IoU table. ``replicates`` Poisson-bootstrap
    replicates of the val images (``seed``) give the findings' intervals. Every
    measurement is one ``runtime.sweep`` (``ablation_masks_counts``), checkpointed in
    ``cache`` (the run's ``runtime.cache.RunCache``) under content keys.
    """
    if replicates < 2:
        raise ValueError(f"replicates must be >= 2 for the findings' intervals, got "
                         f"{replicates}")

    kw = dict(batch_size=batch_size, chunk=chunk, progress=progress, cache=cache,
              devices=devices)
    none = np.zeros((1, num_units), np.float32)
    base_train = measure(split, train, none, num_classes, name="baseline-train", **kw).row(0)
    sc = ablation_masks_counts(split, train, np.eye(num_units, dtype=np.float32), num_classes,
                               name="single-unit-train", **kw)
    single = metrics_from_counts(sc["true"], sc["pred"], sc["correct"], sc["total"])
    with np.errstate(divide="ignore", invalid="ignore"):
        single_logp = sc["logp"] / sc["true"][None, :].astype(np.float64)
    ranking = rank_units(single.balanced_accuracy, base_train.balanced_accuracy, single_logp)
    ks = sorted({min(int(k), num_units) for k in ks if k >= 1})
    remove, keep = class_set_masks(ranking, ks)
    # One stack on val: the unedited model once per class, then per class its sets
    # [C, ks, 2]; each row is read for the class it was built for (its focus).
    stack = np.concatenate([np.zeros((num_classes, num_units), np.float32),
                            np.stack([remove, keep], axis=2).reshape(-1, num_units)])
    focus = np.concatenate([np.arange(num_classes),
                            np.repeat(np.arange(num_classes), len(ks) * 2)])
    vc = ablation_masks_counts(split, val, stack, num_classes,
                               name="class-sets-val", focus=focus,
                               replicates=replicates, seed=seed, **kw)
    sets = metrics_from_counts(vc["true"], vc["pred"], vc["correct"], vc["total"])
    classes = np.arange(num_classes)
    base_val = _diagonal_metrics(sets, classes)
    ba = sets.balanced_accuracy[num_classes:].reshape(num_classes, len(ks), 2, num_classes)
    diag = ba[classes, :, :, classes]                                # [C, ks, 2]
    boot = _focus_ba(vc["boot_true"][:, focus], vc["boot_pred"], vc["boot_correct"],
                     vc["boot_total"][:, None])                       # [B, E]
    b_base = boot[:, :num_classes]                                    # [B, C]
    b_sets = boot[:, num_classes:].reshape(-1, num_classes, len(ks), 2)
    ok = ~np.isnan(base_val.balanced_accuracy) & ~np.isnan(diag).any((1, 2))
    with np.errstate(invalid="ignore"):
        bootstrap = np.stack([np.broadcast_to(np.nanmean(b_base[:, ok], 1)[:, None],
                                              (len(boot), len(ks))),
                              np.nanmean(b_sets[..., 0][:, ok], 1),
                              np.nanmean(b_sets[..., 1][:, ok], 1)], axis=-1)
    curves = {}
    all_k = np.arange(1, num_units)
    for c in curve_classes:
        rm, kp = class_set_masks(ranking[c:c + 1], all_k)
        cm = measure(split, val, np.concatenate([rm[0], kp[0]]), num_classes,
                     name=f"curve-class{c}-val", **kw)
        b = cm.balanced_accuracy[:, c]
        curves[int(c)] = ClassCurve(all_k, b[:len(all_k)], b[len(all_k):])
    names = tuple(class_names) if class_names is not None else \
        tuple(f"class {i}" for i in range(num_classes))
    return AblationResult(
        layer=layer, class_names=names, ks=tuple(ks), baseline_train=base_train,
        baseline_val=base_val, single_unit_ba_train=single.balanced_accuracy,
        single_unit_logp_train=single_logp, ranking=ranking,
        removed_top_k_ba=diag[:, :, 0], kept_top_k_ba=diag[:, :, 1], curves=curves,
        importance_counts=unit_importance_counts(ranking),
        unit_iou=None if unit_iou is None else np.asarray(unit_iou, np.float64),
        train_examples=int(sc["total"]), val_examples=int(vc["total"]),
        val_class_counts=np.asarray(vc["true"], np.int64), bootstrap=bootstrap, seed=seed)


def _diagonal_metrics(sets: ClassMetrics, classes: np.ndarray) -> ClassMetrics:
    """The unedited rows' metrics, each row read for its own class: ``[C]``."""
    return ClassMetrics(**{k: v[classes, classes] for k, v in dataclasses.asdict(sets).items()})
