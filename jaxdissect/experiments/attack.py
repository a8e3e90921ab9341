"""Adversarial attacks seen through units (the paper's "Applications": a
Carlini–Wagner attack turns a ski-resort image into a "bedroom", and the units it
moves most are the class-important ones: snow and mountain down, bed up).

The attack is Carlini & Wagner's targeted L2 attack (IEEE S&P 2017) with a fixed
trade-off constant ``c`` (no binary search over ``c``): the adversarial image is
``x' = (tanh(w) + 1) / 2`` (so it always lies in [0, 1]), and ``w`` minimises

    ||x' - x||_2^2 + c * max(max_{i != t} Z_i(x') - Z_t(x'), -kappa)

with ``Z`` the logits and ``t`` the target class, by ``steps`` steps of Adam
(optax), starting from ``w = arctanh(2x - 1)`` (the clean image). Per image, the
returned image is the successful iterate (target class predicted) of least L2
distance, or the last iterate if none succeeded. The whole optimisation is one
``lax.scan`` under ``jax.jit``; the gradient is ``jax.grad`` of the summed loss
(every image's loss depends only on its own ``w``).

Units moved by the attack: the mean activation of each unit of a layer over the
clean images and over their adversarial versions (mean over images and
positions), their difference, the units moved most up and down, and how those
relate to a per-class importance ranking of units (``jaxdissect.experiments.ablate``'s
single-unit ablation ranking).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdissect.experiments import results
from jaxdissect.experiments.significance import (
    LEVEL,
    UNIT_RANGE,
    Finding,
    overlap_p,
    t_interval,
    wilson_interval,
)

#: ``apply_fn(params, images01 [b, H, W, 3]) -> logits [b, classes]``
ApplyFn = Callable[[object, jax.Array], jax.Array]

#: keeps ``arctanh(2x - 1)`` finite for pixels at exactly 0 or 1
_TANH_EPS = 1e-6


def to_tanh_space(images01: jax.Array) -> jax.Array:
    """``[..]`` images in [0, 1] -> ``w`` with ``(tanh(w) + 1) / 2 ~= images``."""
    x = jnp.clip(2.0 * images01 - 1.0, -1.0 + _TANH_EPS, 1.0 - _TANH_EPS)
    return jnp.arctanh(x)


def from_tanh_space(w: jax.Array) -> jax.Array:
    """``w`` -> images ``(tanh(w) + 1) / 2`` in [0, 1]."""
    return (jnp.tanh(w) + 1.0) * 0.5


def margin(logits: jax.Array, target: jax.Array, kappa: float) -> jax.Array:
    """CW's ``f``: ``max(max_{i != t} Z_i - Z_t, -kappa)``; ``logits [b, C]``,
    ``target [b]`` -> ``[b]``. Negative once the target leads by ``kappa``."""
    num_classes = logits.shape[-1]
    is_target = jax.nn.one_hot(target, num_classes, dtype=bool)
    target_logit = jnp.sum(jnp.where(is_target, logits, 0.0), axis=-1)
    other = jnp.max(jnp.where(is_target, -jnp.inf, logits), axis=-1)
    return jnp.maximum(other - target_logit, -kappa)


def cw_losses(apply_fn: ApplyFn, params, w: jax.Array, images01: jax.Array,
              target: jax.Array, c, kappa: float) -> jax.Array:
    """Per-image CW loss ``[b]``: ``||x' - x||^2 + c * margin``, ``x' = from_tanh_space(w)``.
    ``w``, ``images01`` ``[b, H, W, 3]``; ``target [b]`` int; ``c`` scalar or ``[b]``."""
    adv = from_tanh_space(w)
    l2sq = jnp.sum(jnp.square(adv - images01), axis=(1, 2, 3))
    return l2sq + c * margin(apply_fn(params, adv), target, kappa)


def cw_loss(apply_fn: ApplyFn, params, w, images01, target, c, kappa) -> jax.Array:
    """The summed loss whose gradient the attack follows (scalar)."""
    return jnp.sum(cw_losses(apply_fn, params, w, images01, target, c, kappa))


@flax.struct.dataclass
class CWResult:
    """``adversarial [b, H, W, 3]`` in [0, 1]; ``success [b]`` (target predicted);
    ``l2 [b]`` (``||x' - x||_2`` in [0, 1] pixel units); ``logits [b, C]`` of the
    adversarial images; ``first_success [b]`` the step at which the target was
    first predicted (-1 if never)."""

    adversarial: jax.Array
    success: jax.Array
    l2: jax.Array
    logits: jax.Array
    first_success: jax.Array


def _l2(a, b):
    return jnp.sqrt(jnp.sum(jnp.square(a - b), axis=(1, 2, 3)))


@functools.partial(jax.jit, static_argnames=("learning_rate",))
def _attack_init(images01, *, learning_rate):
    w0 = to_tanh_space(images01)
    b = images01.shape[0]
    return (w0, optax.adam(learning_rate).init(w0), images01,
            jnp.full((b,), jnp.inf, images01.dtype), jnp.full((b,), -1, jnp.int32))


@functools.partial(jax.jit, static_argnames=("apply_fn", "steps", "learning_rate", "kappa"))
def _attack_steps(apply_fn, params, images01, target, c, carry, offset, *, steps,
                  learning_rate, kappa):
    """``steps`` Adam steps from ``carry``, numbered ``offset``, ``offset + 1``, ..."""
    opt = optax.adam(learning_rate)
    grad = jax.grad(cw_loss, argnums=2)

    def step(carry, i):
        w, opt_state, best, best_l2, first = carry
        # score the current iterate, then move: keeps the best successful iterate
        adv = from_tanh_space(w)
        hit = jnp.argmax(apply_fn(params, adv), axis=-1) == target
        l2 = _l2(adv, images01)
        better = hit & (l2 < best_l2)
        best = jnp.where(better[:, None, None, None], adv, best)
        best_l2 = jnp.where(better, l2, best_l2)
        first = jnp.where(hit & (first < 0), i, first)
        g = grad(apply_fn, params, w, images01, target, c, kappa)
        updates, opt_state = opt.update(g, opt_state, w)
        return (optax.apply_updates(w, updates), opt_state, best, best_l2, first), None

    carry, _ = jax.lax.scan(step, carry, offset + jnp.arange(steps))
    return carry


@functools.partial(jax.jit, static_argnames=("apply_fn", "steps"))
def _attack_finish(apply_fn, params, images01, target, carry, *, steps):
    w, _, best, best_l2, first = carry
    # the final iterate too
    adv = from_tanh_space(w)
    hit = jnp.argmax(apply_fn(params, adv), axis=-1) == target
    l2 = _l2(adv, images01)
    better = hit & (l2 < best_l2)
    first = jnp.where(hit & (first < 0), steps, first)
    best = jnp.where(better[:, None, None, None], adv, best)
    found = jnp.isfinite(best_l2) | better
    best = jnp.where(found[:, None, None, None], best, adv)
    logits = apply_fn(params, best)
    success = jnp.argmax(logits, axis=-1) == target
    return CWResult(best, success, _l2(best, images01), logits, first)


def _chunk(steps: int, most: int = 20) -> int:
    """The largest divisor of ``steps`` up to ``most``: steps per compiled call (one
    compile; progress after every call)."""
    return max(d for d in range(1, min(steps, most) + 1) if steps % d == 0)


def _attack(apply_fn, params, images01, target, c, *, steps, learning_rate, kappa,
            progress=False):
    from tqdm.auto import tqdm
    carry = _attack_init(images01, learning_rate=learning_rate)
    chunk = _chunk(steps)
    with tqdm(total=steps, desc="attack (Adam steps)", unit="step", disable=not progress,
              leave=False) as bar:
        for offset in range(0, steps, chunk):
            carry = _attack_steps(apply_fn, params, images01, target, c, carry,
                                  jnp.int32(offset), steps=chunk,
                                  learning_rate=learning_rate, kappa=kappa)
            if progress:
                jax.block_until_ready(carry)
            bar.update(chunk)
    return _attack_finish(apply_fn, params, images01, target, carry, steps=steps)


def cw_attack(apply_fn: ApplyFn, params, images01, target, *, steps: int = 200,
              learning_rate: float = 0.01, c=1.0, kappa: float = 0.0,
              progress: bool = False) -> CWResult:
    """Targeted CW-L2 attack on a batch (see the module docstring). The steps run in
    compiled chunks (``_chunk``); ``progress`` shows a bar updated after each.

    ``apply_fn(params, images01) -> logits`` must be a hashable function (a module-level
    function or a ``functools.partial`` of one; it is a static argument of the compiled
    program, so reuse the same object to avoid recompiling). ``images01 [b, H, W, 3]`` in
    [0, 1]; ``target [b]`` (or a scalar for all) class indices; ``c`` scalar or ``[b]``.
    """
    images01 = jnp.asarray(images01, jnp.float32)
    if images01.ndim != 4 or images01.shape[-1] != 3:
        raise ValueError(f"images must be [batch, H, W, 3], got shape {images01.shape}")
    if float(jnp.min(images01)) < 0 or float(jnp.max(images01)) > 1:
        raise ValueError("images must lie in [0, 1]")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    b = images01.shape[0]
    target = jnp.broadcast_to(jnp.asarray(target, jnp.int32), (b,))
    num_classes = jax.eval_shape(lambda x: apply_fn(params, x), images01[:1]).shape[-1]
    t = np.asarray(target)
    if t.min() < 0 or t.max() >= num_classes:
        raise ValueError(f"target class must lie in [0, {num_classes}), got {sorted(set(t))}")
    c = jnp.broadcast_to(jnp.asarray(c, jnp.float32), (b,))
    return _attack(apply_fn, params, images01, target, c, steps=int(steps),
                   learning_rate=float(learning_rate), kappa=float(kappa), progress=progress)


# ---------------------------------------------------------------- units it moves

@results.typed
@dataclasses.dataclass(frozen=True, eq=False)
class UnitShift:
    """Per unit of one layer: ``clean [u]`` and ``adversarial [u]`` mean activation
    (over images and positions), ``delta = adversarial - clean [u]``, and
    ``per_image [n, u]`` each image's change (mean over positions), the paired
    samples the units' significance rests on."""

    clean: np.ndarray
    adversarial: np.ndarray
    per_image: np.ndarray

    @property
    def delta(self) -> np.ndarray:
        return self.adversarial - self.clean

    def significant(self, level: float = LEVEL) -> np.ndarray:
        """``[u]`` bool: the unit's mean change differs from 0 (paired t-test over
        the images, two-sided at ``level`` with Bonferroni over the units); a unit
        whose change is exactly 0 on every image never is."""
        from scipy.stats import t
        d = np.asarray(self.per_image, np.float64)
        n, u = d.shape
        if n < 2:
            return np.zeros(u, bool)
        se = d.std(0, ddof=1) / math.sqrt(n)
        crit = float(t.ppf(1 - (1 - level) / (2 * u), n - 1))
        mean = d.mean(0)
        return (np.abs(mean) > crit * se) & (mean != 0)

    def most_moved(self, k: int, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(up, down)``: up to ``k`` units with the largest increase / decrease, most
        moved first (ties: lower unit first); with ``level``, only units whose change
        is significant (``significant(level)``) and of that sign."""
        d = self.delta
        up, down = np.argsort(-d, kind="stable"), np.argsort(d, kind="stable")
        if level is not None:
            keep = self.significant(level)
            up, down = up[keep[up] & (d[up] > 0)], down[keep[down] & (d[down] < 0)]
        return up[:k].astype(np.int64), down[:k].astype(np.int64)

    def to_json(self) -> dict:
        return {"clean": self.clean.tolist(), "adversarial": self.adversarial.tolist(),
                "delta": self.delta.tolist(), "images": int(len(self.per_image)),
                "significant_99": self.significant().tolist()}


def unit_shift(layer_fn: Callable, params, clean, adversarial, batch_size: int = 64
               ) -> UnitShift:
    """Mean activations of the layer ``layer_fn(params, images01) -> [b, h, w, u]`` on
    the clean and the adversarial images (``[n, H, W, 3]`` each), in batches, and each
    image's change."""
    clean, adversarial = np.asarray(clean), np.asarray(adversarial)
    if clean.shape != adversarial.shape:
        raise ValueError(f"clean {clean.shape} and adversarial {adversarial.shape} "
                         f"images differ in shape")
    f = jax.jit(lambda p, x: jnp.mean(layer_fn(p, x), axis=(1, 2), dtype=jnp.float32))
    means = []
    for images in (clean, adversarial):
        means.append(np.concatenate([
            np.asarray(f(params, jnp.asarray(images[s:s + batch_size], jnp.float32)),
                       np.float64) for s in range(0, len(images), batch_size)]))
    return UnitShift(means[0].mean(0), means[1].mean(0), means[1] - means[0])


def relate_to_importance(shift: UnitShift, ranking: np.ndarray, source: int, target: int,
                         k: int = 20) -> dict:
    """How the units the attack moves relate to the classes' important units.

    ``ranking [C, u]``: per class, units from most to least important (as
    ``ablate.rank_units`` gives). The units moved are only those whose change is
    significant (``UnitShift.significant``; ties at a change of 0 never count), at
    most ``k`` each way. Returns, for the source class's ``k`` most important
    units, their mean change with its 99% interval over images, set against all
    units' (``source_gap``: their mean change minus all units', per image), and
    their overlap with the units moved down with its hypergeometric p-value; the
    same for the target class and the units moved up; the rank correlation
    (Spearman) between each unit's change and its importance rank for the source
    and the target class.
    """
    ranking = np.asarray(ranking)
    n_classes, n_units = ranking.shape
    for name, c in (("source", source), ("target", target)):
        if not 0 <= c < n_classes:
            raise ValueError(f"{name} class {c} not in [0, {n_classes})")
    d = shift.delta
    if d.size != n_units:
        raise ValueError(f"ranking covers {n_units} units but the layer has {d.size}")
    k = min(k, n_units)
    up, down = shift.most_moved(k, LEVEL)
    src_top, tgt_top = ranking[source, :k], ranking[target, :k]
    per = np.asarray(shift.per_image, np.float64)

    def spearman(cls):
        pos = np.empty(n_units)
        pos[ranking[cls]] = np.arange(n_units)      # 0 = most important
        return float(np.corrcoef(_ranks(d), _ranks(-pos))[0, 1])

    def gap(top):
        mean, lo, hi = t_interval(per[:, top].mean(1) - per.mean(1), LEVEL)
        return {"mean": mean, "ci99": [lo, hi]}

    down_overlap = int(np.intersect1d(src_top, down).size)
    up_overlap = int(np.intersect1d(tgt_top, up).size)
    return {
        "k": k, "num_units": n_units, "images": int(len(per)),
        "source_top_units": src_top.tolist(), "target_top_units": tgt_top.tolist(),
        "moved_up": up.tolist(), "moved_down": down.tolist(),
        "significant_units": int(shift.significant(LEVEL).sum()),
        "source_top_mean_delta": float(d[src_top].mean()),
        "target_top_mean_delta": float(d[tgt_top].mean()),
        "all_units_mean_delta": float(d.mean()),
        "source_gap": gap(src_top), "target_gap": gap(tgt_top),
        "source_top_in_moved_down": down_overlap,
        "target_top_in_moved_up": up_overlap,
        "chance_down": k * down.size / n_units, "chance_up": k * up.size / n_units,
        "p_down": overlap_p(down_overlap, down.size, k, n_units),
        "p_up": overlap_p(up_overlap, up.size, k, n_units),
        "spearman_delta_vs_source_importance": spearman(source),
        "spearman_delta_vs_target_importance": spearman(target),
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), 0-based."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(x.size)
    r[order] = np.arange(x.size)
    uniq, inv = np.unique(x, return_inverse=True)
    if uniq.size < x.size:
        sums = np.bincount(inv, weights=r)
        r = (sums / np.bincount(inv))[inv]
    return r


# ---------------------------------------------------------------- class importance

def class_logit_drop(split, source, num_units: int, num_classes: int, *,
                     batch_size: int = 32, chunk: int = 32, **sweep_kw
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(drop [C, u], count [C])``: per class c and unit u, the mean over the images
    of class c of ``logit_c(unedited) - logit_c(unit u zeroed)``.

    A continuous companion of the single-unit balanced-accuracy damage
    (``jaxdissect.experiments.ablate``): on a model that is right almost always, removing one unit
    rarely flips a prediction, so many units tie on accuracy; the logit drop orders
    them. The same sweep as the ablation's (``ablate.ablation_masks_counts``, whose
    ``drop`` it reads; ``sweep_kw`` go to it), so one pass gives both.
    """
    from jaxdissect.experiments.ablate import ablation_masks_counts
    c = ablation_masks_counts(split, source, np.eye(num_units, dtype=np.float32), num_classes,
                              batch_size=batch_size, chunk=chunk, **sweep_kw)
    return logit_drop(c), c["true"]


def logit_drop(counts: dict) -> np.ndarray:
    """``[C, E]`` mean drop of each class's logit under each edit, from
    ``ablate.ablation_masks_counts``'s sums."""
    return counts["drop"].T / np.maximum(counts["true"], 1)[:, None]


def importance_ranking(split, source, num_units: int, num_classes: int, **sweep_kw
                       ) -> np.ndarray:
    """``[C, u]``: per class, units by the damage their single removal does to its
    balanced accuracy on ``source``, ties broken by the drop of its logit
    (``rank_with_tiebreak``); the unedited model and every single-unit ablation in
    one sweep (``ablate.ablation_masks_counts``; ``sweep_kw`` go to it)."""
    from jaxdissect.experiments.ablate import ablation_masks_counts, metrics_from_counts
    masks = np.concatenate([np.zeros((1, num_units), np.float32),
                            np.eye(num_units, dtype=np.float32)])
    c = ablation_masks_counts(split, source, masks, num_classes, **sweep_kw)
    ba = metrics_from_counts(c["true"], c["pred"], c["correct"], c["total"]).balanced_accuracy
    damage = (ba[1:] - ba[0][None, :]).T                                      # [C, u]
    return rank_with_tiebreak(damage, logit_drop(c)[:, 1:])   # row 0: unedited, drop 0


def rank_with_tiebreak(damage: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """``[C, u]`` ranking: units by balanced-accuracy damage ``[C, u]`` (edited minus
    baseline; more negative = more important), ties broken by larger logit ``drop``
    ``[C, u]``, then by unit index. NaN damage ranks last."""
    damage = np.nan_to_num(np.asarray(damage, np.float64), nan=np.inf)
    drop = np.asarray(drop, np.float64)
    return np.stack([np.lexsort((np.arange(d.size), -g, d)) for d, g in zip(damage, drop)])


def recognition_counts(source, label: int, predict: Callable, batch_size: int = 64
                       ) -> tuple[int, int, int, int]:
    """``(hits, positives, false_alarms, negatives)`` over every image of ``source``
    (with ``"label"``): of the ``positives`` images of class ``label``, ``hits`` are
    predicted as it; of the ``negatives`` others, ``false_alarms`` are.
    ``predict(images) -> classes``."""
    counts = np.zeros(4, np.int64)
    for start in range(0, source.num_examples, batch_size):
        b = source.batch(start, min(start + batch_size, source.num_examples))
        truth = np.asarray(b["label"]) == label
        said = np.asarray(predict(jnp.asarray(b["image"], jnp.float32))) == label
        counts += [np.sum(said & truth), np.sum(truth), np.sum(said & ~truth), np.sum(~truth)]
    return tuple(int(c) for c in counts)


# ---------------------------------------------------------------- the typed result

@results.typed
@dataclasses.dataclass(frozen=True, eq=False)
class AttackResult(results.Saved):
    """A targeted attack on ``n`` images of ``source_class`` seen through ``layer``.

    ``image_index [n]`` the attacked images' indices in their source; ``success
    [n]``, ``l2 [n]``, ``adversarial_class [n]`` (names), ``first_success [n]`` per
    image (``CWResult``); ``shift`` the layer's units on clean and adversarial
    images; ``ranking [C, u]`` the per-class unit importance it is related to,
    made as ``ranking_from`` says; ``unit_labels [u]`` (dissection labels or None);
    ``top`` the k of the most moved / most important units; ``recognition``: how well
    the classifier tells the source class from the others before the attack
    (``recognition_counts``), or None when not measured."""

    model: str
    layer: str
    source_class: str
    target_class: str
    source_index: int
    target_index: int
    steps: int
    learning_rate: float
    c: float
    kappa: float
    image_index: np.ndarray
    success: np.ndarray
    l2: np.ndarray
    adversarial_class: tuple
    first_success: np.ndarray
    shift: UnitShift
    ranking: np.ndarray
    ranking_from: str
    unit_labels: tuple | None
    top: int = 20
    recognition: tuple | None = None

    @property
    def num_images(self) -> int:
        return int(len(self.image_index))

    def relation(self) -> dict:
        return relate_to_importance(self.shift, self.ranking, self.source_index,
                                    self.target_index, k=self.top)

    def applicability(self) -> str:
        """Why the attack's findings mean nothing here ("" when they do): the
        classifier must recognise the source class, predicting it for its images
        more often than for the others (99% Wilson intervals apart); turning the
        images of a class a model does not know into another class shows nothing."""
        s = self.source_class
        if self.recognition is None:
            return f"how well the classifier recognises {s} was not measured"
        hits, pos, false, neg = self.recognition
        p_lo, p_hi = wilson_interval(hits, pos)
        f_lo, f_hi = wilson_interval(false, neg)
        if pos and neg and p_lo > f_hi:
            return ""
        return (f"the classifier does not recognise {s}: it predicts {s} for {hits} of "
                f"{pos} {s} images (99% interval {p_lo:.0%} to {p_hi:.0%}) and for {false} "
                f"of {neg} other images ({f_lo:.0%} to {f_hi:.0%}); the intervals are not "
                f"apart")

    def findings(self) -> list[Finding]:
        """Success with its Clopper-Pearson interval; the class-important units moved
        more than the average unit (paired interval over the images); the overlap of
        the significantly moved units with the important ones (hypergeometric). None
        applies unless the classifier recognises the source class
        (``applicability``)."""
        from scipy.stats import beta
        rel, s, t = self.relation(), self.source_class, self.target_class
        n, hits = self.num_images, int(np.sum(self.success))
        alpha = 1 - LEVEL
        why = self.applicability()
        if why:
            k = rel["k"]
            return [Finding.not_applicable(text, why, samples=n, bounds=bounds)
                    for text, bounds in (
                        (f"The attack turns <b>{s}</b> images into <b>{t}</b>.", UNIT_RANGE),
                        (f"The attack lowers <b>{s}</b>'s {k} most important units more "
                         f"than the average unit.", (-math.inf, math.inf)),
                        (f"The attack raises <b>{t}</b>'s {k} most important units more "
                         f"than the average unit.", (-math.inf, math.inf)),
                        (f"The units the attack lowers significantly are among <b>{s}</b>'s "
                         f"{k} most important.", (0, k)),
                        (f"The units the attack raises significantly are among <b>{t}</b>'s "
                         f"{k} most important.", (0, k)))]
        lo = float(beta.ppf(alpha / 2, hits, n - hits + 1)) if hits > 0 else 0.0
        hi = float(beta.ppf(1 - alpha / 2, hits + 1, n - hits)) if hits < n else 1.0
        out = [Finding(
            f"The attack turns {hits} of {n} <b>{s}</b> images into <b>{t}</b> (99% "
            f"interval of the success rate {lo:.0%} to {hi:.0%}; mean L2 "
            f"{float(np.mean(self.l2)):.3f}, pixel values in [0, 1]).",
            hits > 0, hits / max(n, 1), lo, hi, 0.0, n, bounds=UNIT_RANGE)]
        k = rel["k"]
        for key, cls, sign, word in (("source", s, -1, "lowers"), ("target", t, 1, "raises")):
            g = rel[f"{key}_gap"]
            lo, hi = g["ci99"]
            holds = bool(hi < 0) if sign < 0 else bool(lo > 0)
            out.append(Finding(
                f"The attack {word} <b>{cls}</b>'s {k} most important units more than the "
                f"average unit: their mean change is {rel[f'{key}_top_mean_delta']:+.4f} vs "
                f"{rel['all_units_mean_delta']:+.4f} for all {rel['num_units']} units, a "
                f"difference of {g['mean']:+.4f} (99% interval {lo:+.4f} to {hi:+.4f} over "
                f"{n} images); criterion: the interval excludes 0.",
                holds, g["mean"], lo, hi, 0.0, n))
        sig = rel["significant_units"]
        for key, cls, moved, word in (("down", s, "moved_down", "lowers"),
                                      ("up", t, "moved_up", "raises")):
            m = len(rel[moved])
            overlap = rel["source_top_in_moved_down" if key == "down" else
                          "target_top_in_moved_up"]
            p = rel[f"p_{key}"]
            out.append(Finding(
                f"Of the {m} units it {word} significantly (at most {k}; {sig} of "
                f"{rel['num_units']} units change significantly over {n} images, 99% with "
                f"Bonferroni over units), {overlap} are among <b>{cls}</b>'s {k} most "
                f"important units (chance {rel[f'chance_{key}']:.1f}, p = {p:.2g}); "
                f"criterion: p < {alpha:g}.",
                bool(p < alpha), float(overlap), float("nan"), float("nan"),
                rel[f"chance_{key}"], n, p_value=p, bounds=(0, k)))
        return out

    def to_json(self) -> dict:
        return {
            "model": self.model, "layer": self.layer, "source_class": self.source_class,
            "target_class": self.target_class, "source_index": self.source_index,
            "target_index": self.target_index, "steps": self.steps,
            "learning_rate": self.learning_rate, "c": self.c, "kappa": self.kappa,
            "num_images": self.num_images, "success_count": int(np.sum(self.success)),
            "mean_l2": float(np.mean(self.l2)) if self.num_images else None,
            "images": [{"index": int(i), "success": bool(ok), "l2": float(d),
                        "adversarial_class": a, "first_success_step": int(f)}
                       for i, ok, d, a, f in zip(self.image_index, self.success, self.l2,
                                                 self.adversarial_class, self.first_success)],
            "unit_shift": self.shift.to_json(), "relation": results.jsonable(self.relation()),
            "ranking": self.ranking.tolist(), "ranking_from": self.ranking_from,
            "unit_labels": None if self.unit_labels is None else list(self.unit_labels),
            "recognition": None if self.recognition is None else list(self.recognition),
            "findings": [f.to_json() for f in self.findings()]}

