"""The role of units in a generator: what turning units off or on does to the scene.

Follows the paper's generator experiments (Bau et al. 2020, "Role of units in the
generator"; the reference's ``experiment/generator_int_experiment.py`` and its
notebook):

* **per-unit ablation**: for every unit of a layer, the change in the pixel share of
  every segmentation class when that unit alone is zeroed;
* **removal**: zeroing a concept's n best-IoU units together, n = 0 .. 30; the
  fraction of the concept's pixels removed, ``R = -sum(d_i) / sum(b_i)`` over samples
  i (``b_i`` the unedited share, ``d_i`` the change), with a 99% Poisson-bootstrap
  percentile interval of that ratio (samples resampled, each sample's change
  paired with its own share; at most 1 like ``R``, since no edit removes more
  than is there);
* **insertion**: setting a concept's top-20 units to their 99.5% quantile values at
  one feature-map location; the concept pixels added, broken down by the labels the
  unedited image has at the centre of that location (its context).

The result is an ``InterventionResult`` whose ``findings()`` first check that they
mean something here (the concept present in the unedited images, its units' labels
significant, contexts with at least ``MIN_EDITS`` edits) and hold only with
statistical support: the removal's interval above the criterion, the paper's
contexts (pre-registered) apart by the criterion's ratio, the extreme supported
contexts' gap (exploratory) with its bootstrap interval above 0, Bonferroni over the
pairs.

A pixel "has" label l when any of the segmentation's K layers is l there; the pixel
share of l is the fraction of the image's pixels that have it. Every edit runs
through ``tail`` (``spec.resume`` from the layer) from activations computed once per
batch, ``vmap``-ed over chunks of a stack of edits (``lax.map``) inside one compiled
step, then through the segmenter. Each sweep is one ``runtime.sweep`` into a
``ShareTally`` or ``ContextTally`` (exact fixed-point sums: identical on any number of
devices and processes, resumable).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdissect.data.source import ImageSource, Prefix
from jaxdissect.edits import Edit
from jaxdissect.experiments import results
from jaxdissect.experiments.ablate import Split
from jaxdissect.experiments.significance import (
    EXPLORATORY,
    LEVEL,
    Finding,
    added_ratio,
    bonferroni_z,
    bootstrap_interval,
    pct,
    poisson_weights,
)
from jaxdissect.labels import LabelSet
from jaxdissect.runtime import sweep
from jaxdissect.runtime.cache import RunCache
from jaxdissect.runtime.fingerprint import data_identity, fingerprint
from jaxdissect.stats import kernels
from jaxdissect.stats.fixed import (
    FixedSum,
    merge_fields,
    numpy_fields,
    quantize,
    split_sum,
    weighted_parts,
)

Segment = Callable[[jax.Array], jax.Array]     # images -> seg [b, K, Hs, Ws] int

Z99 = 2.58  # two-sided 99% normal quantile, as the reference's notebook uses
#: the fewest edits a context needs before an insertion comparison uses it: no
#: single edit then carries more than 1% of the context's mean, and a context the
#: segmenter assigns to a few generated pixels is not compared
MIN_EDITS = 100
#: the false-discovery rate at which a unit's label counts as significant
LABEL_FDR = 0.01



def labels_support(significant, n: int, concept: str, role: str) -> str:
    """Why ``n`` units ``role`` (removed, inserted, painted) support no finding about
    ``concept`` ("" when they do): their labels were not tested, or none of them
    (``significant``: one flag per unit) has the concept as its significant label."""
    if significant is None:
        return (f"the labels of the {n} units {role} were not tested for significance "
                f"(a dissection with --significance)")
    if n == 0 or not np.any(significant):
        return (f"none of the {n} units {role} has {concept} as a significant label "
                f"(image-permutation test of the best of all labels, {LABEL_FDR:.0%} "
                f"false-discovery rate)")
    return ""


def split_generator(spec, layer: str) -> Split:
    """Cut a generator (a :class:`~jaxdissect.spec.ModelSpec`) at ``layer``:
    ``head(params, batch) -> acts`` from ``batch["z"]``; ``tail(params, acts, edit)
    ->`` images (``spec.images``: ProGAN's ``(out + 1) / 2``, unclipped as the
    reference segments them), running only the layers after ``layer`` under ``jit``."""

    def head(p, batch):
        return spec.activations(p, jnp.asarray(batch["z"]), layer)

    def tail(p, acts, edit):
        return spec.images(spec.resume(p, layer, acts, edits={layer: edit}))

    return Split(head, tail, spec.params)


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

SHARE_BITS = 24   # pixel shares in [-1, 1]: exact for images up to 4096 pixels


def _edit_key(split: Split, source, cache: RunCache, **settings) -> str:
    """A sweep's content key: the run's identity (``cache``), the weights'
    fingerprint, the data's identity and the settings."""
    return cache.key(weights=fingerprint(split.params), data=data_identity(source),
                     **settings)


@struct.dataclass
class ShareTally:
    """Sums over samples of each label's pixel share unedited (``base``, ``base_sq``
    ``[L]``) and of its change under each of ``E`` edits (``delta``, ``delta_sq``,
    ``delta_base`` (times the unedited share) ``[E, L]``), exact fixed-point sums;
    ``n`` samples. With ``B`` bootstrap replicates (Poisson weights of each sample's
    index), per replicate the weighted sums ``boot_base [B, L]``, ``boot_delta [B,
    E, L]`` and the weights' total ``boot_n [B]``."""

    base: FixedSum
    base_sq: FixedSum
    delta: FixedSum
    delta_sq: FixedSum
    delta_base: FixedSum
    n: jnp.ndarray
    boot_base: FixedSum
    boot_delta: FixedSum
    boot_n: jnp.ndarray

    @classmethod
    def empty(cls, edits: int, labels: int, replicates: int = 0) -> "ShareTally":
        f = lambda *shape: FixedSum.zeros(shape, SHARE_BITS)  # noqa: E731
        return cls(f(labels), f(labels), f(edits, labels), f(edits, labels), f(edits, labels),
                   jnp.zeros((), jnp.int32), f(replicates, labels),
                   f(replicates, edits, labels), jnp.zeros((replicates,), jnp.int32))

    def update(self, base, edited, valid, weights=None) -> "ShareTally":
        """``base [b, L]`` unedited shares, ``edited [E, b, L]``, ``valid [b]``,
        ``weights [b, B]`` int32 bootstrap weights (with replicates)."""
        v = valid[:, None]
        d = edited - base[None]
        out = ShareTally(
            self.base.add(base, 0, v), self.base_sq.add(base * base, 0, v),
            self.delta.add(d, 1, v), self.delta_sq.add(d * d, 1, v),
            self.delta_base.add(d * base[None], 1, v), self.n + valid.sum(dtype=jnp.int32),
            self.boot_base, self.boot_delta, self.boot_n)
        if self.boot_n.shape[0] == 0:
            return out
        w = weights * valid[:, None]
        qb = quantize(jnp.where(v, base, 0.0), SHARE_BITS)                   # [b, L]
        qd = quantize(jnp.where(v[None], d, 0.0), SHARE_BITS)                # [E, b, L]
        return out.replace(
            boot_base=self.boot_base.add_parts(*weighted_parts(qb, w)),
            boot_delta=self.boot_delta.add_parts(*weighted_parts(jnp.moveaxis(qd, 1, 0), w)),
            boot_n=self.boot_n + w.sum(0, dtype=jnp.int32))

    def merge(self, other: "ShareTally") -> "ShareTally":
        return merge_fields(self, other)

    def compute(self) -> dict:
        return numpy_fields(self)


def ablation_share_deltas(split: Split, segment: Segment, source: ImageSource,
                          masks: np.ndarray, num_labels: int, *, batch_size: int = 16,
                          chunk: int = 16, cache: RunCache | None = None,
                          name: str = "ablate", progress: bool = True,
                          devices=None, checkpoint_every: int = 20,
                          replicates: int = 0) -> dict:
    """Per-sample change in every label's pixel share with each row of ``masks`` zeroed.

    ``masks [E, units]`` (1 = unit zeroed). One ``runtime.sweep``: per batch the layer
    once (``split.head``), the unedited images segmented, then the stack of edits
    through the tail and the segmenter inside the step, ``chunk`` at a time
    (``lax.map``), into a ``ShareTally``. Returns its sums (``ShareTally.compute``):
    ``base [L]``, ``base_sq [L]``, ``delta [E, L]``, ``delta_sq [E, L]``,
    ``delta_base [E, L]`` and ``n``, and with ``replicates`` Poisson-bootstrap
    replicates over samples ``boot_base [B, L]``, ``boot_delta [B, E, L]``, ``boot_n
    [B]``. With ``cache`` (the run's ``RunCache``: model, layer, segmenter, data,
    settings) it checkpoints under ``name``, content-keyed.
    """
    masks = np.asarray(masks, np.float32)
    if masks.ndim != 2:
        raise ValueError(f"masks must be [edits, units], got shape {masks.shape}")
    n_edits, n_units = masks.shape
    chunk = max(1, min(chunk, n_edits))

    def shares(params, acts, alpha):
        images = split.tail(params, acts, _unit_edit(alpha, jnp.zeros(())))
        return pixel_shares(segment(images), num_labels)

    def step(stat, batch, params, masks):
        acts = split.head(params, batch)
        if acts.shape[-1] != n_units:
            raise ValueError(f"layer has {acts.shape[-1]} units but masks have {n_units}")
        base = shares(params, acts, jnp.zeros((n_units,)))
        edited = jax.lax.map(lambda a: shares(params, acts, a), masks, batch_size=chunk)
        weights = poisson_weights(batch["index"], replicates) if replicates else None
        return stat.update(base, edited, batch["valid"], weights)

    key = None if cache is None else _edit_key(split, source, cache, kind="shares",
                                               masks=masks, labels=num_labels,
                                               **({"replicates": replicates}
                                                  if replicates else {}))
    stat = sweep.sweep(step, ShareTally.empty(n_edits, num_labels, replicates), source,
                       batch_size=batch_size, replicated=(split.params, masks), name=name,
                       key=key, cache_dir=None if cache is None else cache.folder,
                       checkpoint_every=checkpoint_every,
                       progress=progress, devices=devices)
    return stat.compute()


def mean_and_stderr(total, total_sq, n):
    """Mean and standard error of the mean from sums (sample std, ``n - 1``)."""
    total, total_sq = np.asarray(total, np.float64), np.asarray(total_sq, np.float64)
    mean = total / max(n, 1)
    var = np.maximum(total_sq / max(n, 1) - mean * mean, 0.0) * (n / max(n - 1, 1))
    return mean, np.sqrt(var / max(n, 1))


def best_iou_units(iou: np.ndarray, concept: int, n: int) -> np.ndarray:
    """The ``n`` units with the highest IoU for ``concept``; ``iou [units, labels]``."""
    return np.argsort(-np.asarray(iou)[:, concept], kind="stable")[:n]


@results.typed
@dataclasses.dataclass(frozen=True, eq=False)
class RemovalCurve:
    """A concept's pixels removed by zeroing its n best-IoU units together.

    ``units [max n]`` best IoU first; ``n_units [m]`` the set sizes measured;
    ``removed_fraction [m]`` the ratio estimate ``R = -sum(d_i) / sum(b_i)`` and
    ``stderr [m]`` its standard error (delta method) over ``samples`` samples;
    ``baseline_share`` the concept's mean pixel share unedited. With the bootstrap:
    ``boot_removed [B, m]`` each replicate's ``R`` and ``boot_baseline [B]`` its
    baseline share. ``significant [max n]`` (or None when labels were not tested):
    whether each of ``units`` has the concept as its significant label."""

    concept: str
    units: np.ndarray
    n_units: np.ndarray
    baseline_share: float
    removed_fraction: np.ndarray
    stderr: np.ndarray
    samples: int
    boot_removed: np.ndarray | None = None
    boot_baseline: np.ndarray | None = None
    significant: np.ndarray | None = None

    def interval(self, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
        """``(low [m], high [m])``: the bootstrap percentile interval at ``level``
        (at most 1, like every replicate); without replicates, ``R`` plus or minus
        the normal quantile's standard errors."""
        if self.boot_removed is None:
            z = bonferroni_z(level)
            return self.removed_fraction - z * self.stderr, self.removed_fraction + z * self.stderr
        pairs = [bootstrap_interval(self.boot_removed[:, j], level)
                 for j in range(self.boot_removed.shape[1])]
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])

    def baseline_interval(self) -> tuple[float, float]:
        """The 99% bootstrap interval of the concept's baseline share (within [0, 1])."""
        if self.boot_baseline is None:
            return -math.inf, math.inf
        return bootstrap_interval(self.boot_baseline, LEVEL)

    def _at(self, at: int) -> int:
        measured = np.flatnonzero(self.n_units <= at)
        return int(measured[-1]) if measured.size else len(self.n_units) - 1

    def applicability(self, at: int = 20) -> str:
        """Why removal means nothing here ("" when it does): the concept must be
        present unedited (the 99% interval of its baseline share above zero) and the
        units removed must include one whose label is significantly the concept."""
        n = int(self.n_units[self._at(at)])
        b_lo, b_hi = self.baseline_interval()
        if not self.baseline_share > 0 or not b_lo > 0:
            return (f"{self.concept} is not present in the unedited images: its baseline "
                    f"share is {self.baseline_share:.2%} (99% interval {pct(b_lo)} to "
                    f"{pct(b_hi)}, {self.samples} samples)")
        return labels_support(None if self.significant is None else self.significant[:n],
                              n, self.concept, "removed")

    def finding(self, min_removed: float = 0.4, at: int = 20) -> Finding:
        """Holds when zeroing the ``at`` best units (the paper's "about 20"; the largest
        set measured if fewer) removes at least ``min_removed`` of the concept's pixels,
        the whole 99% interval. The set size is fixed in advance, so no correction;
        the most removed over all set sizes is reported beside it. Does not apply
        unless ``applicability`` is satisfied."""
        sizes = int(np.sum(self.n_units > 0))
        i = self._at(at)
        n = int(self.n_units[i])
        bounds = (-math.inf, 1.0)
        why = self.applicability(at)
        if why:
            return Finding.not_applicable(
                f"Zeroing the {n} best-IoU units of <b>{self.concept}</b> removes at least "
                f"{min_removed:.0%} of its pixels. Paper: trees down 52% with 8 units.", why,
                samples=self.samples, criterion=min_removed, bounds=bounds)
        lo99, hi99 = self.interval(LEVEL)
        low, high = self.interval(1 - (1 - LEVEL) / max(sizes, 1))
        r = np.where(self.n_units > 0, self.removed_fraction, np.nan)
        best = int(np.nanargmax(r)) if np.isfinite(r).any() else len(r) - 1
        b_lo, b_hi = self.baseline_interval()
        supported = int(self.significant[:n].sum())
        text = (f"Zeroing the {n} best-IoU units of <b>{self.concept}</b> ({supported} of them "
                f"significantly labelled {self.concept}) removes "
                f"{pct(self.removed_fraction[i])} (99% CI {pct(lo99[i])} to {pct(hi99[i])}) "
                f"of its pixels (baseline share {self.baseline_share:.1%}, 99% CI "
                f"{pct(b_lo)} to {pct(b_hi)}, {self.samples} samples); the most removed is "
                f"{pct(r[best])} with its {int(self.n_units[best])} best units (99% CI "
                f"{pct(low[best])} to {pct(high[best])}, Bonferroni over {sizes} set sizes). "
                f"Paper: trees down 52% with 8 units, 55% with 20-30; criterion: at least "
                f"{min_removed:.0%} with {at} units, the whole interval.")
        holds = bool(n > 0 and np.isfinite(lo99[i]) and lo99[i] >= min_removed)
        return Finding(text, holds, float(self.removed_fraction[i]), float(lo99[i]),
                       float(hi99[i]), min_removed, self.samples, bounds=bounds)

    def to_json(self) -> dict:
        low, high = self.interval(LEVEL)
        b_lo, b_hi = self.baseline_interval()
        return {"concept": self.concept, "units": self.units.tolist(),
                "n_units": self.n_units.tolist(), "baseline_share": self.baseline_share,
                "baseline_share_ci99": [b_lo, b_hi] if math.isfinite(b_lo) else None,
                "removed_fraction": self.removed_fraction.tolist(),
                "remaining_share": (1 - self.removed_fraction).tolist(),
                "stderr": self.stderr.tolist(), "ci99_low": low.tolist(),
                "ci99_high": high.tolist(), "samples": self.samples,
                "significant": None if self.significant is None else
                self.significant.tolist()}


def removal_curve(deltas: dict, concept: int, ns: Sequence[int], name: str = "",
                  units: np.ndarray = (), significant: np.ndarray | None = None
                  ) -> RemovalCurve:
    """The concept's pixel share after removing its n best-IoU units, from the sums of
    ``ablation_share_deltas`` run on masks ``[len(ns), units]`` (one per n), with its
    bootstrap replicates when the sums have them. ``significant [units]``: each
    unit's label significantly the concept (None: not tested)."""
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
    boot_removed = boot_baseline = None
    if len(deltas.get("boot_n", ())):
        bb = np.asarray(deltas["boot_base"][:, concept], np.float64)           # [B]
        bd = np.asarray(deltas["boot_delta"][:, :, concept], np.float64)       # [B, m]
        with np.errstate(divide="ignore", invalid="ignore"):
            # at most 1: no edit removes more than is there (rounding aside)
            boot_removed = np.minimum(np.where(bb[:, None] > 0, -bd / bb[:, None], np.nan),
                                      1.0)
            total = np.asarray(deltas["boot_n"], np.float64)
            boot_baseline = np.where(total > 0, bb / total, np.nan)
    units = np.asarray(units, np.int64)
    if significant is not None:
        significant = np.asarray(significant, bool)[units]
    return RemovalCurve(name, units, np.asarray(ns, np.int64), base, removed, se,
                        int(deltas["n"]), boot_removed, boot_baseline, significant)


# ---------------------------------------------------------------- insertion

@struct.dataclass
class ContextTally:
    """Per edit location (``E`` of them) and context label: sums of the concept's
    share added (``ctx_sum``, ``ctx_sq`` ``[E, L]``, exact fixed-point) and the
    number of (sample, location) edits (``ctx_n [E, L]``); per location over all
    samples ``loc_sum``, ``loc_sq`` ``[E]``; ``n`` samples. With ``B`` bootstrap
    replicates (Poisson weights of each sample's index: a sample's locations are
    resampled together, so their correlation counts), per replicate and context
    label the share added summed over locations ``boot_sum [B, L]`` and the edits
    ``boot_n [B, L]``."""

    ctx_sum: FixedSum
    ctx_sq: FixedSum
    ctx_n: jnp.ndarray
    loc_sum: FixedSum
    loc_sq: FixedSum
    n: jnp.ndarray
    boot_sum: FixedSum
    boot_n: jnp.ndarray

    @classmethod
    def empty(cls, edits: int, labels: int, replicates: int = 0) -> "ContextTally":
        f = lambda *shape: FixedSum.zeros(shape, SHARE_BITS)  # noqa: E731
        return cls(f(edits, labels), f(edits, labels), jnp.zeros((edits, labels), jnp.int32),
                   f(edits), f(edits), jnp.zeros((), jnp.int32), f(replicates, labels),
                   jnp.zeros((replicates, labels), jnp.int32))

    def update(self, d, ctx, valid, weights) -> "ContextTally":
        """``d [E, b]`` share added per edit and sample, ``ctx [E, b, L]`` bool
        context labels, ``valid [b]``, ``weights [b, B]`` int32 bootstrap weights."""
        ctx = ctx & valid[None, :, None]
        dd = jnp.where(ctx, d[..., None], 0.0)                          # [E, b, L]
        v = valid[None, :]
        w = weights * valid[:, None]
        q = quantize(dd, SHARE_BITS)              # once: per location and per sample
        return ContextTally(
            self.ctx_sum.add_parts(*split_sum(q, 1)), self.ctx_sq.add(dd * dd, 1),
            self.ctx_n + ctx.sum(1, dtype=jnp.int32), self.loc_sum.add(d, 1, v),
            self.loc_sq.add(d * d, 1, v), self.n + valid.sum(dtype=jnp.int32),
            self.boot_sum.add_parts(*weighted_parts(q.sum(0, dtype=jnp.int32), w)),
            self.boot_n + w.T @ ctx.sum(0, dtype=jnp.int32))

    def merge(self, other: "ContextTally") -> "ContextTally":
        return merge_fields(self, other)

    def compute(self) -> dict:
        return numpy_fields(self)


def insertion_by_context(split: Split, segment: Segment, source: ImageSource,
                         units: np.ndarray, values: np.ndarray, concept: int,
                         num_labels: int, *, batch_size: int = 16, chunk: int = 16,
                         cache: RunCache | None = None, name: str = "insert",
                         progress: bool = True, devices=None,
                         checkpoint_every: int = 20, replicates: int = 1000) -> dict:
    """Concept pixels added by setting ``units`` to ``values`` at each feature-map location.

    For each location (y, x) of the layer's ``[h, w]`` grid and each sample, the change
    in the number of pixels having ``concept``, as a fraction of the image's pixels;
    the context of a sample at (y, x) is every non-empty label of the unedited
    segmentation at the centre pixel of that location's cell (the reference's rule).
    One ``runtime.sweep`` with the ``h * w`` edits ``lax.map``-ed inside the step into a
    ``ContextTally``. Returns its sums: ``ctx_sum [h*w, L]``, ``ctx_sq [h*w, L]``,
    ``ctx_n [h*w, L]`` (per location and context label), ``loc_sum [h*w]``,
    ``loc_sq``, ``n``, the ``grid`` and, for ``replicates`` Poisson-bootstrap
    replicates over samples, ``boot_sum [B, L]`` and ``boot_n [B, L]``.
    """
    units = np.asarray(units)
    values = np.asarray(values, np.float32)
    if units.shape != values.shape:
        raise ValueError(f"units {units.shape} and values {values.shape} differ in shape")
    probe = sweep.first_batch(source, batch_size, devices)
    _, h, w, n_units = jax.eval_shape(split.head, split.params, probe).shape
    if units.size and (units.min() < 0 or units.max() >= n_units):
        raise ValueError(f"units must lie in [0, {n_units})")
    value = np.zeros((n_units,), np.float32)
    value[units] = values
    unit_mask = np.zeros((n_units,), np.float32)
    unit_mask[units] = 1
    alphas = np.eye(h * w, dtype=np.float32).reshape(h * w, h, w, 1) * unit_mask  # [E,h,w,U]
    ys, xs = np.divmod(np.arange(h * w, dtype=np.int32), w)
    chunk = max(1, min(chunk, h * w))

    def concept_share(images):
        return label_presence(segment(images), num_labels)[..., concept].mean(
            axis=(1, 2), dtype=jnp.float32)

    def step(stat, batch, params, value, alphas, ys, xs):
        acts = split.head(params, batch)
        base_seg = segment(split.tail(params, acts, _unit_edit(jnp.zeros((n_units,)), value)))
        if base_seg.shape[2] % h or base_seg.shape[3] % w:
            raise ValueError(f"segmentation {base_seg.shape[2:]} is not a multiple of the "
                             f"layer grid {(h, w)}")
        base_share = label_presence(base_seg, num_labels)[..., concept].mean(
            axis=(1, 2), dtype=jnp.float32)
        hs, ws = base_seg.shape[2] // h, base_seg.shape[3] // w

        def one(args):
            alpha, y, x = args
            d = concept_share(split.tail(params, acts, _unit_edit(alpha, value))) - base_share
            centre = jax.lax.dynamic_slice_in_dim(jax.lax.dynamic_slice_in_dim(
                base_seg, y * hs + hs // 2, 1, axis=2), x * ws + ws // 2, 1, axis=3)[:, :, 0, 0]
            ctx = (centre[..., None] == jnp.arange(num_labels).reshape(1, 1, -1)).any(1)
            return d, ctx.at[:, 0].set(False)

        d, ctx = jax.lax.map(one, (alphas, ys, xs), batch_size=chunk)
        return stat.update(d, ctx, batch["valid"], poisson_weights(batch["index"], replicates))

    key = None if cache is None else _edit_key(
        split, source, cache, kind="insertion", units=units, values=values,
        concept=concept, labels=num_labels, replicates=replicates)
    stat = sweep.sweep(step, ContextTally.empty(h * w, num_labels, replicates), source,
                       batch_size=batch_size, replicated=(split.params, value, alphas, ys, xs),
                       name=name, key=key, cache_dir=None if cache is None else cache.folder,
                       checkpoint_every=checkpoint_every, progress=progress, devices=devices)
    out = stat.compute()
    out["grid"] = np.array([h, w])
    return out


@results.typed
@dataclasses.dataclass(frozen=True, eq=False)
class InsertionSummary:
    """A concept's units set to their high levels at one location, by context.

    Per context label seen at least ``min_count`` times (``labels [r]``, named
    ``names`` / ``categories``), sorted by ``mean_added [r]`` (the concept's share of
    the image added, mean over its ``counts [r]`` (sample, location) edits) with
    ``stderr [r]``; ``per_location_mean_added [h, w]``; ``samples`` z samples."""

    concept: str
    units: np.ndarray
    labels: np.ndarray
    names: tuple
    categories: tuple
    counts: np.ndarray
    mean_added: np.ndarray
    stderr: np.ndarray
    per_location_mean_added: np.ndarray
    samples: int
    #: per bootstrap replicate and label: share added summed over edits, and edits
    boot_sum: np.ndarray | None = None
    boot_n: np.ndarray | None = None
    #: ``[units]`` whether each unit inserted has the concept as its significant
    #: label (None: labels not tested)
    significant: np.ndarray | None = None

    def contexts(self) -> list[dict]:
        """One row per context; with bootstrap replicates, ``ci99``: the 99% percentile
        interval of its mean share added (samples resampled), within [-1, 1]."""
        rows = [{"label": int(lab), "name": n, "category": c, "count": int(k),
                 "mean_added": float(m), "stderr": float(e)} for lab, n, c, k, m, e in zip(
                     self.labels, self.names, self.categories, self.counts, self.mean_added,
                     self.stderr)]
        if self.boot_sum is not None:
            for r in rows:
                n = self.boot_n[:, r["label"]]
                reps = np.where(n > 0, self.boot_sum[:, r["label"]] / np.maximum(n, 1), np.nan)
                r["ci99"] = list(bootstrap_interval(reps))
        return rows

    def supported(self) -> list[dict]:
        """The contexts with at least ``MIN_EDITS`` edits (the only ones compared)."""
        return [r for r in self.contexts() if r["count"] >= MIN_EDITS]

    def unit_support(self) -> str:
        """Why inserting these units means nothing ("" when it does): at least one
        must have the concept as its significant label."""
        return labels_support(self.significant, len(self.units), self.concept, "inserted")

    def differs_by_context(self) -> dict | None:
        """The highest against the lowest object context among those with at least
        ``MIN_EDITS`` edits (all such contexts if fewer than two objects): the gap
        (in [-2, 2], a difference of two shares added), its z, and with bootstrap
        replicates the gap's percentile interval at 99% with Bonferroni over every
        pair of the contexts compared (they are picked as the extremes; samples
        resampled, each sample's edits together) and whether it excludes 0. None
        with fewer than two such contexts."""
        rows = self.supported()
        objs = [r for r in rows if r["category"] == "object"]
        pool = objs if len(objs) >= 2 else rows
        if len(pool) < 2:
            return None
        hi, lo = pool[0], pool[-1]
        gap = hi["mean_added"] - lo["mean_added"]
        se = math.sqrt(hi["stderr"] ** 2 + lo["stderr"] ** 2)
        pairs = len(pool) * (len(pool) - 1) // 2
        out = {"highest": hi["name"], "lowest": lo["name"], "gap": gap,
               "z": gap / se if se > 0 else float("inf"), "pairs": pairs,
               "z_critical": bonferroni_z(LEVEL, pairs), "level": 1 - (1 - LEVEL) / pairs}
        if self.boot_sum is not None:
            reps = (self.group_means([hi["name"]])["replicates"] -
                    self.group_means([lo["name"]])["replicates"])
            low, high = bootstrap_interval(reps, out["level"])
            out.update(low=low, high=high, significant_99=bool(low > 0))
        return out

    def finding(self) -> Finding:
        """Exploratory: the most different pair of supported contexts, corrected for
        having been picked among all pairs (Bonferroni on the bootstrap interval)."""
        what = (f"Inserting <b>{self.concept}</b> units adds more {self.concept} in some "
                f"contexts than in others (the most different pair of contexts with at "
                f"least {MIN_EDITS} edits each).")
        bounds = (-2.0, 2.0)
        why = self.unit_support()
        d = self.differs_by_context()
        if not why and d is None:
            why = (f"fewer than two contexts have at least {MIN_EDITS} edits (no single edit "
                   f"may carry more than 1% of a context's mean); seen: " + (", ".join(
                       f"{r['name']} {r['count']}" for r in self.contexts()) or "none"))
        if not why and "low" not in d:
            why = "the insertion was measured without bootstrap replicates"
        if why:
            return Finding.not_applicable(what, why, samples=self.samples, criterion=0.0,
                                          bounds=bounds, kind=EXPLORATORY)
        rows = {r["name"]: r for r in self.contexts()}
        hi, lo = rows[d["highest"]], rows[d["lowest"]]
        text = (f"Inserting <b>{self.concept}</b> units at one location adds "
                f"{hi['mean_added']:.2%} of the image as {self.concept} where the context is "
                f"{hi['name']} ({hi['count']} edits) but {lo['mean_added']:.2%} where it is "
                f"{lo['name']} ({lo['count']} edits): a gap of {100 * d['gap']:.3f} points "
                f"(99% CI {100 * d['low']:+.3f} to {100 * d['high']:+.3f} with Bonferroni "
                f"over {d['pairs']} pairs of contexts with at least {MIN_EDITS} edits; "
                f"bootstrap over {self.samples} samples). Paper: the effect depends on "
                f"context (doors: windows/buildings vs sky/trees); criterion: the interval "
                f"above 0.")
        return Finding(text, d["significant_99"], d["gap"], d["low"], d["high"], 0.0,
                       self.samples, bounds=bounds, kind=EXPLORATORY)

    def group_means(self, names) -> dict:
        """Mean share added over the edits whose context is one of the labels ``names``
        (pooled), its 99% bootstrap interval (samples resampled) and the edits."""
        rows = [r for r in self.contexts() if r["name"] in names]
        count = sum(r["count"] for r in rows)
        mean = sum(r["count"] * r["mean_added"] for r in rows) / count if count else math.nan
        ids = [r["label"] for r in rows]
        reps = np.full(0, np.nan)
        if self.boot_sum is not None and ids:
            n = self.boot_n[:, ids].sum(1)
            reps = np.where(n > 0, self.boot_sum[:, ids].sum(1) / np.maximum(n, 1), np.nan)
        low, high = bootstrap_interval(reps)
        return {"names": [r["name"] for r in rows], "count": count, "mean_added": mean,
                "low": low, "high": high, "replicates": reps}

    def context_finding(self, min_ratio: float = 5.0) -> Finding | None:
        """Pre-registered: the paper's contexts for this concept (``PAPER_CONTEXTS``,
        e.g. doors: window and house against sky and tree): holds when the favoured
        contexts' mean added is at least ``min_ratio`` times the others' and their 99%
        bootstrap intervals do not overlap. ``None`` for a concept without paper
        contexts; not applicable when a group has fewer than ``MIN_EDITS`` edits or
        the units' labels are not significant."""
        groups = PAPER_CONTEXTS.get(self.concept)
        if groups is None:
            return None
        bounds = (0.0, math.inf)
        what = (f"Inserting <b>{self.concept}</b> units adds at least {min_ratio:g}x as much "
                f"{self.concept} where the context is {' or '.join(groups[0])} as where it is "
                f"{' or '.join(groups[1])}. Paper: doors add 18% where the object was a "
                f"window, 8% on buildings, under 1% on sky or trees.")
        why = self.unit_support()
        if not why and self.boot_sum is None:
            why = "the insertion was measured without bootstrap replicates"
        if not why:
            hi, lo = (self.group_means(g) for g in groups)
            short = [(g, m["count"]) for g, m in zip(groups, (hi, lo)) if m["count"] < MIN_EDITS]
            if short:
                why = "; ".join(f"the contexts {' or '.join(g)} have {c} edits, fewer than "
                                f"{MIN_EDITS} (no single edit may carry more than 1% of a "
                                f"context's mean)" for g, c in short)
        if why:
            return Finding.not_applicable(what, why, samples=self.samples,
                                          criterion=min_ratio, bounds=bounds)
        # a group whose mean added is negative adds nothing: the ratio lies in [0, inf]
        ratio = added_ratio(hi["mean_added"], lo["mean_added"])
        reps = added_ratio(hi["replicates"], lo["replicates"])
        r_low, r_high = bootstrap_interval(np.where(np.isinf(reps), 1e9, reps))
        apart = hi["low"] > lo["high"]
        holds = bool(apart and hi["mean_added"] > 0 and ratio >= min_ratio)
        ratio_text = f"{ratio:.1f}x" if math.isfinite(ratio) else "more than any multiple"
        text = (f"Inserting <b>{self.concept}</b> units adds {hi['mean_added']:.2%} of the "
                f"image as {self.concept} where the context is {' or '.join(hi['names'])} "
                f"(99% CI {hi['low']:.2%} to {hi['high']:.2%}, {hi['count']} edits) but "
                f"{lo['mean_added']:.2%} where it is {' or '.join(lo['names'])} (99% CI "
                f"{lo['low']:.2%} to {lo['high']:.2%}, {lo['count']} edits): {ratio_text} "
                f"(99% CI {r_low:.1f}x to {'inf' if r_high >= 1e9 else f'{r_high:.1f}x'}; "
                f"bootstrap over {self.samples} samples). Paper: doors add 18% where the "
                f"object was a window, 8% on buildings, under 1% on sky or trees; criterion: "
                f"at least {min_ratio:g}x with intervals apart.")
        return Finding(text, holds, ratio if math.isfinite(ratio) else 1e9, r_low, r_high,
                       min_ratio, self.samples, bounds=bounds)

    def to_json(self) -> dict:
        out = {"concept": self.concept, "units": self.units.tolist(),
               "contexts": self.contexts(), "grid": list(self.per_location_mean_added.shape),
               "samples": self.samples,
               "per_location_mean_added": self.per_location_mean_added.tolist()}
        d = self.differs_by_context()
        if d is not None:
            out["differs_by_context"] = d
        groups = PAPER_CONTEXTS.get(self.concept)
        if groups is not None and self.boot_sum is not None:
            out["paper_contexts"] = [
                {k: v for k, v in self.group_means(g).items() if k != "replicates"}
                for g in groups]
        return out


#: the contexts the paper compares for a concept: (favoured, unfavoured) object names
PAPER_CONTEXTS = {"door": (("window", "house"), ("sky", "tree"))}


def summarize_insertion(sums: dict, labels, min_count: int = 20, concept: str = "",
                        units: np.ndarray = (), significant: np.ndarray | None = None
                        ) -> InsertionSummary:
    """Mean concept share added per context label (pooled over locations), with
    standard errors; contexts seen fewer than ``min_count`` times are dropped.
    ``significant [all units]``: each unit's label significantly the concept (None:
    not tested)."""
    s, q, n = sums["ctx_sum"].sum(0), sums["ctx_sq"].sum(0), sums["ctx_n"].sum(0)
    rows = []
    for label in range(1, len(n)):
        if n[label] < min_count:
            continue
        mean, se = mean_and_stderr(s[label], q[label], int(n[label]))
        rows.append((float(mean), label, int(n[label]), float(se)))
    rows.sort(key=lambda r: -r[0])
    h, w = map(int, sums["grid"])
    total = int(sums["n"])
    loc_mean, _ = mean_and_stderr(sums["loc_sum"], sums["loc_sq"], total)
    lab = np.array([r[1] for r in rows], np.int64)
    return InsertionSummary(
        concept, np.asarray(units, np.int64), lab, tuple(labels.names[i] for i in lab),
        tuple(labels.categories[i] for i in lab), np.array([r[2] for r in rows], np.int64),
        np.array([r[0] for r in rows]), np.array([r[3] for r in rows]),
        loc_mean.reshape(h, w), total, sums.get("boot_sum"), sums.get("boot_n"),
        None if significant is None else np.asarray(significant, bool)[
            np.asarray(units, np.int64)])


@results.typed
@dataclasses.dataclass(frozen=True, eq=False)
class InterventionResult(results.Saved):
    """The paper's generator experiments on one layer (``u`` units, ``L`` labels).

    ``baseline_share`` / ``baseline_stderr [L]``: each label's mean pixel share of the
    unedited images; ``unit_ablation_delta [u, L]``: its mean change with each unit
    zeroed alone, over ``unit_ablation_samples`` samples; ``removal`` and
    ``insertion``: per concept name, a ``RemovalCurve`` / ``InsertionSummary``."""

    layer: str
    labels: LabelSet
    num_units: int
    baseline_share: np.ndarray
    baseline_stderr: np.ndarray
    unit_ablation_delta: np.ndarray
    unit_ablation_samples: int
    removal: dict
    insertion: dict

    def findings(self, min_removed: float = 0.4) -> list[Finding]:
        """Removal per concept, then per inserted concept the paper's contexts
        (pre-registered, where the paper has them) and the most different supported
        pair (exploratory)."""
        out = [cv.finding(min_removed) for cv in self.removal.values()]
        for ins in self.insertion.values():
            out += [f for f in (ins.context_finding(), ins.finding()) if f]
        return out

    def to_json(self) -> dict:
        return {"layer": self.layer, "num_units": self.num_units,
                "kernels": kernels.mode(), "labels": self.labels.to_json(),
                "baseline_share": self.baseline_share.tolist(),
                "baseline_stderr": self.baseline_stderr.tolist(),
                "unit_ablation_delta": self.unit_ablation_delta.tolist(),
                "unit_ablation_samples": self.unit_ablation_samples,
                "removal": {k: v.to_json() for k, v in self.removal.items()},
                "insertion": {k: v.to_json() for k, v in self.insertion.items()},
                "findings": [f.to_json() for f in self.findings()]}



# ---------------------------------------------------------------- the whole experiment

def run_experiment(split: Split, segment: Segment, source: ImageSource,
                   iou: np.ndarray, labels, high_values: np.ndarray, *,
                   remove_concepts: Sequence[int] = (), insert_concepts: Sequence[int] = (),
                   max_remove: int = 30, insert_units: int = 20, sweep_samples: int | None = None,
                   removal_samples: int | None = None, insertion_samples: int | None = None,
                   batch_size: int = 16, chunk: int = 16,
                   layer: str = "", cache: RunCache | None = None,
                   progress: bool = True, devices=None, significant_labels=None,
                   replicates: int = 1000) -> "InterventionResult":
    """The paper's generator experiments.

    ``iou [units, L]`` from dissection; ``high_values [units]`` each unit's 99.5%
    quantile level. ``sweep_samples`` limits the per-unit sweep to the first samples
    (the reference used 10,000 for insertion and fewer for sweeps).
    ``significant_labels [units]``: each unit's label if it passed its significance
    test, else 0 (``label_significance.Significance.significant_labels``); without
    it, no finding applies. ``replicates``: the removal's bootstrap replicates.
    """
    iou = np.asarray(iou)
    n_units, n_labels = iou.shape
    kw = dict(batch_size=batch_size, chunk=chunk, progress=progress, cache=cache,
              devices=devices)
    sweep_src = source if sweep_samples is None else Prefix(source, sweep_samples)
    # every unit's edit runs on each batch: batches small enough that the bar moves at
    # least 8 times (the sums are exact at any batch size)
    per_unit = ablation_share_deltas(split, segment, sweep_src, np.eye(n_units), n_labels,
                                     name="unit-ablation", **{**kw, "batch_size": max(
                                         1, min(batch_size, -(-sweep_src.num_examples // 8)))})
    n = int(per_unit["n"])
    base_mean, base_se = mean_and_stderr(per_unit["base"], per_unit["base_sq"], n)
    removal, insertion = {}, {}
    ns = list(range(0, min(max_remove, n_units) + 1))
    for c in remove_concepts:
        order = best_iou_units(iou, c, len(ns) - 1)
        masks = np.zeros((len(ns), n_units), np.float32)
        for i, k in enumerate(ns):
            masks[i, order[:k]] = 1
        removal_src = source if removal_samples is None else Prefix(source, removal_samples)
        d = ablation_share_deltas(split, segment, removal_src, masks, n_labels,
                                  name=f"removal-{labels.names[c]}", replicates=replicates,
                                  **kw)
        removal[labels.names[c]] = removal_curve(d, c, ns, labels.names[c], order,
                                                 _significant(significant_labels, c))
    for c in insert_concepts:
        units = best_iou_units(iou, c, min(insert_units, n_units))
        ins_src = source if insertion_samples is None else Prefix(source, insertion_samples)
        sums = insertion_by_context(split, segment, ins_src, units,
                                    np.asarray(high_values)[units], c, n_labels,
                                    name=f"insertion-{labels.names[c]}", **kw)
        insertion[labels.names[c]] = summarize_insertion(
            sums, labels, concept=labels.names[c], units=units,
            significant=_significant(significant_labels, c))
    return InterventionResult(layer, labels, n_units, base_mean, base_se,
                              np.asarray(per_unit["delta"], np.float64) / max(n, 1), n,
                              removal, insertion)


def _significant(significant_labels, concept: int) -> np.ndarray | None:
    """``[units]`` bool: the unit's significant label is ``concept`` (None: untested)."""
    return None if significant_labels is None else \
        np.asarray(significant_labels) == concept
