"""Network dissection of one layer: thresholds, top images and unit-concept IoU.

``dissect(compute, source, labels, ...)`` composes, per batch of ``source``:

    compute(batch) -> acts [b, h, w, units], seg [b, K, Hs, Ws]
    upsample(acts) -> [b, Hs, Ws, units]              (receptive-field aligned)

and tallies, when the threshold rank ``ceil(q * n)`` fits ``budget`` values per
unit, everything in ONE pass:

    pass "onepass":  TopLabels (each unit's ``budget`` largest upsampled values with
                     their pixels' labels: exact thresholds and exact IoU counts)
                     + TopK (top images by the maximum of the raw activation map,
                     as the reference ranks them)

and otherwise (large data sets) in four passes with memory independent of ``n``,
over the layer's activations kept from one run of the model where they fit in host
memory or on local disk (``runtime.activations``), else running the model each pass:

    passes "quantile", "radix2", "radix3":  exact radix select of the thresholds
                     (the first also tallies TopK)
    pass "iou":      IoUTally of (acts_up > t_u) against the segmentation

Each pass is one ``runtime.sweep.sweep``: ``compute`` is traced inside one jitted
step sharded over local devices, each process (``jax.distributed``) reading its own
slice of ``source``, the statistics merged exactly across devices and processes, so
``compute`` must be a JAX function of the batch dict (the ``ImageSource`` keys plus
``"index"`` int32 global image indices). The radix passes never use ``seg``, so XLA
drops the segmenter from those steps. With ``cache`` (a ``runtime.cache.RunCache``,
made from the complete run: model, layer, data, segmenter, settings), each pass
checkpoints its statistic and position every ``checkpoint_every`` batches under a
content key (the run's identity, weights' fingerprint, data identity, settings); a
killed run resumes where it
stopped and gives identical results, and changed weights, data or settings never
reuse a result.

``iou_rule``: ``"pnas"`` (default, the paper's union) or ``"netdissect"`` (the
original NetDissect's category-aware union, ``jaxdissect.stats.iou``; both paths).

Example (a classifier, the reference's conv5_3 setting)::

    up = Upsampler.plain((14, 14), (56, 56))
    compute = spec_compute(spec, "conv5_3", lambda batch, images: segmenter(images))
    cache = run_cache("results/vgg16-conv5_3/cache", model=spec, layer="conv5_3",
                      data=source, segmenter=segmenter, upsample="plain")
    result = dissect(compute, source, segmenter.labels, upsample=up, params=spec.params,
                     cache=cache)
    result.best_label, result.best_iou, result.to_json()
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.data.source import ImageSource
from jaxdissect.experiments import label_significance as _registers_significance  # noqa: F401
from jaxdissect.experiments import results
from jaxdissect.labels import LabelSet
from jaxdissect.runtime import activations, memory, sweep
from jaxdissect.runtime import devices as sharding
from jaxdissect.runtime.cache import RunCache, content_key
from jaxdissect.runtime.fingerprint import data_identity, fingerprint
from jaxdissect.stats import kernels
from jaxdissect.stats.checks import DataCheck
from jaxdissect.stats.iou import (
    IoUTally,
    best_by_category,
    best_labels,
    check_iou_rule,
    iou_from_counts,
    pairs_above,
    union_unit_area,
)
from jaxdissect.stats.quantile import (
    RADIX_SCHEDULE,
    RadixHistogram,
    as_levels,
    key_to_float,
    radix_refine,
    rank_for_level,
)
from jaxdissect.stats.topk import TopK, image_max
from jaxdissect.stats.toplabels import TopLabels, budget_for
from jaxdissect.stats.upsample import Upsampler

Compute = Callable[[dict[str, jax.Array]], tuple[jax.Array, jax.Array]]


@results.typed
@dataclasses.dataclass
class DissectResult(results.Saved):
    """Everything one dissection measured. ``u`` units, ``L`` labels (0 = none).

    thresholds ``[u]`` float32: the exact level ``quantile`` of each unit's
        upsampled activations (the ``ceil(q n)``-th largest value);
    levels: ``{q: [u]}`` thresholds at every requested level (including ``quantile``);
    iou ``[u, L]`` float64, column 0 is 0; best_label / best_iou ``[u]``;
    intersections ``[u, L]``, unit_area ``[u]``, label_area ``[L]`` int64 exact
        pixel counts, pixels the number of pixels tallied;
    topk_values / topk_images ``[u, k]``: each unit's top images by maximum
        activation, descending (image -1 if fewer than k images);
    iou_rule: "pnas" or "netdissect"; category_area ``[u, C]`` int64 (the
        "netdissect" rule's unit area per category of ``labels.category_names``)
        or None;
    significance: the labels' permutation test
        (``experiments.label_significance.Significance``) or None; max_p: with it,
        a unit is labelled only if its label's p-value is at most ``max_p``;
    kernels: the statistics' kernels, ``"native"`` or ``"xla"`` (``stats.kernels``).

    ``save(path)`` / ``DissectResult.load(path)``: every field, by name
    (``experiments.results``).
    """

    labels: LabelSet
    quantile: float
    miniou: float
    thresholds: np.ndarray
    levels: dict[float, np.ndarray]
    iou: np.ndarray
    best_label: np.ndarray
    best_iou: np.ndarray
    intersections: np.ndarray
    unit_area: np.ndarray
    label_area: np.ndarray
    pixels: int
    topk_values: np.ndarray
    topk_images: np.ndarray
    num_examples: int
    iou_rule: str = "pnas"
    category_area: np.ndarray | None = None
    significance: Any = None
    max_p: float | None = None
    kernels: str = "native"

    @property
    def num_units(self) -> int:
        return len(self.thresholds)

    @property
    def labelled(self) -> np.ndarray:
        """``[u]`` bool: the unit's best IoU exceeds ``miniou`` (and, with ``max_p``,
        its label was tested with a p-value of at most ``max_p``)."""
        ok = self.best_iou > self.miniou
        if self.max_p is not None and self.significance is not None:
            ok &= self.significance.per_unit(self.num_units)["p_value"] <= self.max_p
        return ok

    def with_significance(self, significance, max_p: float | None = None):
        """This result carrying ``significance`` (a ``Significance`` of its labels);
        ``max_p`` drops labels whose p-value exceeds it."""
        if max_p is not None and not 0 < max_p <= 1:
            raise ValueError(f"max_p must be in (0, 1], got {max_p}")
        return dataclasses.replace(self, significance=significance, max_p=max_p)

    def unit_label(self, unit: int) -> str | None:
        """The unit's concept name if labelled, else None."""
        return self.labels.names[self.best_label[unit]] if self.labelled[unit] else None

    def pairs(self) -> list[tuple[int, int, float]]:
        """Every ``(unit, label, iou)`` with IoU above ``miniou``."""
        return pairs_above(self.iou, self.miniou)

    def best_by_category(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{category: (label [u], iou [u])}``: each unit's best label per category."""
        return best_by_category(self.iou, self.labels.categories)

    @property
    def fires(self) -> np.ndarray:
        """``[u]`` bool: the unit is above its threshold somewhere (a unit that never
        fires, e.g. a dead ReLU, has no region, no concept and no top images)."""
        return np.asarray(self.unit_area) > 0

    def units(self) -> list[dict]:
        """One record per unit: unit, label, category, iou, labelled, fires, threshold,
        top images (none for a unit that never fires); with ``significance``, also
        p_value, iou_low, iou_high, null_iou (None where the unit was not tested)."""
        fires, labelled = self.fires, self.labelled
        records = [{"unit": u, "label": self.labels.names[self.best_label[u]],
                    "category": self.labels.categories[self.best_label[u]],
                    "iou": float(self.best_iou[u]), "labelled": bool(labelled[u]),
                    "fires": bool(fires[u]), "threshold": float(self.thresholds[u]),
                    "top_images": [int(i) for i in self.topk_images[u] if i >= 0]
                    if fires[u] else []}
                   for u in range(self.num_units)]
        if self.significance is not None:
            for name, values in self.significance.per_unit(self.num_units).items():
                for rec, v in zip(records, values):
                    rec[name] = None if np.isnan(v) else float(v)
        return records

    def union_unit_area(self) -> np.ndarray:
        """The unit's side of each IoU's union: ``[u]`` (pnas) or ``[u, L]``."""
        categories = self.labels.category_ids if self.iou_rule == "netdissect" else ()
        return union_unit_area({"unit_area": self.unit_area,
                                "category_area": self.category_area}, categories)

    def to_json(self) -> dict:
        """A JSON-able summary (per-unit records, label set, settings, per-category
        best labels, every labelled pair)."""
        return {
            "quantile": self.quantile, "miniou": self.miniou, "iou_rule": self.iou_rule,
            "kernels": self.kernels, "num_examples": self.num_examples, "num_units": self.num_units,
            "labels": self.labels.to_json(), "units": self.units(),
            "levels": {repr(q): [float(v) for v in t] for q, t in self.levels.items()},
            "best_by_category": {c: {"label": [int(x) for x in lab],
                                     "iou": [float(x) for x in iou]}
                                 for c, (lab, iou) in self.best_by_category().items()},
            "pairs": [{"unit": u, "label": c, "iou": i} for u, c, i in self.pairs()],
            **({} if self.significance is None else {
                "significance": self.significance.to_json(), "max_p": self.max_p}),
        }


#: the largest one-pass buffer ``dissect`` picks by itself, in bytes
ONE_PASS_MEMORY = 256 << 20


def auto_budget(levels, n_values: int, units: int, layers: int) -> int:
    """The one-pass budget (``ceil(q n)`` rounded up to 128) when the buffer fits
    ``ONE_PASS_MEMORY``, else 4096 (so the radix passes run)."""
    budget = budget_for(levels, n_values)
    if units * budget * 4 * (1 + layers) <= ONE_PASS_MEMORY:
        return budget
    return 4096


def spec_forward(spec, layer: str):
    """``forward(batch, params) -> (acts [b, h, w, units], images [b, H, W, 3])`` of a
    :class:`~jaxdissect.spec.ModelSpec`: ``layer``'s activation as a map (``spec.maps``)
    and the images it saw, the batch's own for a classifier, ``spec.images(output)``
    for a generator (read from ``batch["z"]``)."""
    def forward(batch, params):
        inputs = jnp.asarray(batch["image"] if spec.kind == "classifier" else batch["z"])
        out, acts = spec.run(params, inputs, capture=(layer,))
        images = inputs if spec.kind == "classifier" else spec.images(out)
        return spec.maps(layer, acts[layer]), images

    return forward


def spec_compute(spec, layer: str, segment: Callable[[dict, jax.Array], jax.Array]
                 ) -> Compute:
    """A ``compute(batch, params)`` for ``dissect(..., params=spec.params)`` from a
    :class:`~jaxdissect.spec.ModelSpec`: ``layer``'s activation as ``[b, h, w, units]``
    and ``segment(batch, images)`` (:func:`spec_forward`); e.g. ``lambda batch, images:
    segmenter(images)``, or ``lambda batch, images: batch["seg"]`` for ground truth.
    """
    forward = spec_forward(spec, layer)

    def compute(batch, params):
        acts, images = forward(batch, params)
        return acts, segment(batch, images)

    return compute


def dissect(compute: Compute, source: ImageSource, labels: LabelSet, *,
            upsample: Callable[[jax.Array], jax.Array] | None = None,
            quantile: float = 0.01, levels: Sequence[float] = (), miniou: float = 0.04,
            batch_size: int | str = 32, topk: int = 20, budget: int | None = None,
            cache: RunCache | None = None, checkpoint_every: int = 20, progress: bool = True,
            devices: Sequence[jax.Device] | None = None, params: Any = None,
            iou_rule: str = "pnas") -> DissectResult:
    """Dissects one layer; see the module docstring.

    ``compute(batch) -> (acts [b,h,w,u], seg [b,K,Hs,Ws] int)``, traced in jit.
    ``upsample``: ``acts -> [b,Hs,Ws,u]``; default stretches ``(h, w)`` over
    ``(Hs, Ws)`` (``Upsampler.plain``), or nothing if they agree. ``batch_size``:
    images per step, or ``"auto"``: the largest that fits the device's memory
    (``runtime.memory.dissect_batch_size``). ``quantile``: the
    threshold level q; ``levels``: more levels to report (e.g. 0.005 for
    insertion values). ``budget``: values kept per unit by the one pass; when
    ``ceil(q * n)`` exceeds it, three exact radix passes and an IoU pass are used
    instead. ``None`` (default): the one pass whenever its buffer (``units x
    ceil(q n)`` values with their ``K`` labels, 4 bytes each) fits
    ``ONE_PASS_MEMORY`` bytes, else the radix passes. ``cache``: where the passes
    checkpoint (``runtime.sweep``) and the identity of the complete run
    (``runtime.cache.run_cache``: the model, layer, data, segmenter and settings
    that ``compute`` stands for); their files are keyed by it plus the fingerprint
    of ``params``' bytes, ``source.identity()``, the labels and every setting here.
    ``params``: if given, ``compute`` is called as
    ``compute(batch, params)`` and ``params`` (model weights, any pytree) is an
    argument of the compiled step, replicated over devices, instead of a constant
    folded into it: closing over a large model's weights would embed them in the
    program (slow to compile, copied per executable). ``iou_rule``: ``"pnas"`` or
    ``"netdissect"`` (the union counts the unit only in images where its active
    pixels touch the label's category; see ``jaxdissect.stats.iou``).
    """
    if not isinstance(labels, LabelSet):
        raise TypeError(f"labels must be a LabelSet, got {type(labels).__name__}")
    if not 0 < miniou < 1:
        raise ValueError(f"miniou must be in (0, 1), got {miniou}")
    if topk <= 0 or (budget is not None and budget <= 0) or checkpoint_every <= 0:
        raise ValueError("topk, budget and checkpoint_every must be positive")
    all_levels = tuple(dict.fromkeys(as_levels(quantile)[0] + tuple(levels)))
    for q in all_levels:
        rank_for_level(q, 1)  # validates q
    if source.num_examples <= 0:
        raise ValueError("the source has no examples")
    # each label's category index: the "netdissect" union's per-category unit areas
    categories = labels.category_ids if check_iou_rule(iou_rule) == "netdissect" else None

    def call(batch, p):
        return compute(batch) if params is None else compute(batch, p)

    if batch_size == "auto":  # the largest that fits the device (runtime.memory)
        batch_size = memory.dissect_batch_size(
            call, source, len(labels), params=params, upsample=upsample, budget=budget,
            levels=all_levels, devices=devices)
    example = sweep.first_batch(source, batch_size, devices)

    acts_shape, seg_shape = jax.eval_shape(
        call, {k: v for k, v in example.items() if k != "valid"}, params)
    if len(acts_shape.shape) != 4 or len(seg_shape.shape) != 4:
        raise ValueError(f"compute must return acts [b,h,w,u] and seg [b,K,H,W]; got "
                         f"{acts_shape.shape} and {seg_shape.shape}")
    units, grid = acts_shape.shape[-1], tuple(seg_shape.shape[2:])
    default_upsample = upsample is None
    if upsample is None:
        data_hw = tuple(acts_shape.shape[1:3])
        upsample = (lambda a: a) if data_hw == grid else Upsampler.plain(data_hw, grid)
    up_shape = jax.eval_shape(upsample, acts_shape).shape
    if tuple(up_shape[1:3]) != grid or up_shape[-1] != units:
        raise ValueError(f"upsample gives {up_shape}, expected [b, {grid[0]}, {grid[1]}, "
                         f"{units}] to match the segmentation")
    n_values = source.num_examples * grid[0] * grid[1]
    if budget is None:
        # (the netdissect rule keeps each value's image index: one more column)
        budget = auto_budget(all_levels, n_values, units,
                             int(seg_shape.shape[1]) + (categories is not None))
    key = cache_dir = None
    if cache is not None:
        cache_dir = cache.folder
        key = cache.key(
            weights=None if params is None else fingerprint(params),
            data=data_identity(source), labels=labels, levels=all_levels, budget=budget,
            topk=topk, units=units, grid=grid, layers=int(seg_shape.shape[1]),
            upsample="default" if default_upsample else _callable_identity(upsample),
            iou_rule=iou_rule, checks="finite,labels", kernels=kernels.mode())

    def run(name, step, empty, *replicated, key=key):
        return sweep.sweep(step, empty, source, batch_size=batch_size,
                           replicated=replicated, name=name, key=key, cache_dir=cache_dir,
                           checkpoint_every=checkpoint_every, progress=progress,
                           devices=devices)

    def model(batch, p):
        batch = dict(batch)
        valid = batch.pop("valid")
        acts, seg = call(batch, p)
        return acts, seg, valid, batch["index"]

    use_radix = max(rank_for_level(q, n_values) for q in all_levels) > budget

    if not use_radix:
        # One pass: thresholds and IoU counts from each unit's top values with their
        # pixels' labels, plus the top images.
        def one_pass(stat, batch, p):
            acts, seg, valid, index = model(batch, p)
            top, images, check = stat.parts
            return sharding.Joint((top.update(acts, seg, valid, index, upsample),
                                   images.update(image_max(acts), index, valid),
                                   check.update(acts, seg, valid, index, len(labels))))

        layers = int(seg_shape.shape[1])
        state = run("onepass", one_pass, sharding.Joint(
            (TopLabels.empty(units, budget, len(labels), layers, categories is not None),
             TopK.empty(units, topk), DataCheck.empty())),
            params)
        toplabels, topstat, check = state.parts
        check.raise_if_bad(len(labels), lambda i: _name_image(source, i))
        thresholds = toplabels.thresholds(all_levels)
        by_level = {q: np.asarray(t, np.float32) for q, t in zip(all_levels, thresholds)}
        t_main = by_level[all_levels[0]]
        counts = toplabels.counts(t_main, categories)
    else:
        # The model runs once: its activations are kept for the four passes where
        # they fit (runtime.activations), which then read them instead.
        stored = _store(call, source, acts_shape, seg_shape, len(labels), batch_size,
                        params, cache_dir, devices)
        if stored is not None:
            source, call = stored, _read_stored
        try:
            by_level, topstat = _radix_thresholds(run, model, upsample, units, all_levels,
                                                  topk, params, source, len(labels))
            t_main = by_level[all_levels[0]]

            # Pass 4: exact IoU counts at the main threshold.
            def iou_pass(tally, batch, t, p):
                acts, seg, valid, _ = model(batch, p)
                return tally.update(upsample(acts), t, seg, valid)

            tally = run("iou", iou_pass, IoUTally.empty(units, len(labels), categories),
                        jnp.asarray(t_main), params,
                        key=None if key is None else content_key(key, t_main))
        finally:
            if stored is not None:
                source = stored.inner
                stored.close()
        counts = tally.counts()
    iou = iou_from_counts(counts["inter"], union_unit_area(counts, categories or ()),
                          counts["label_area"])
    best, best_iou = best_labels(iou)
    values, images = topstat.compute()
    return DissectResult(
        labels=labels, quantile=all_levels[0], miniou=miniou, thresholds=t_main,
        levels=by_level, iou=iou, best_label=best, best_iou=best_iou,
        intersections=counts["inter"], unit_area=counts["unit_area"],
        label_area=counts["label_area"], pixels=int(counts["pixels"]),
        topk_values=values, topk_images=images, num_examples=source.num_examples,
        iou_rule=iou_rule, category_area=counts.get("category_area"), kernels=kernels.mode())


def _radix_thresholds(run, model, upsample, units, all_levels, topk, params, source,
                      num_labels):
    """Passes 1-3 of the radix path: ``({q: thresholds [u]}, TopK)``; the data check
    (``stats.checks``) in pass 1."""
    def pass1(stat, batch, p):
        acts, seg, valid, index = model(batch, p)
        hist, images, check = stat.parts
        return sharding.Joint((hist.update(upsample(acts), valid),
                               images.update(image_max(acts), index, valid),
                               check.update(acts, seg, valid, index, num_labels)))

    state = run("quantile", pass1, sharding.Joint(
        (RadixHistogram.empty(units, len(all_levels), *RADIX_SCHEDULE[0]),
         TopK.empty(units, topk), DataCheck.empty())), params)
    hist, topstat, check = state.parts
    check.raise_if_bad(num_labels, lambda i: _name_image(source, i))
    n = int(hist.count.to_numpy())
    ranks = np.tile([rank_for_level(q, n) for q in all_levels], (units, 1))
    prefix, ranks = radix_refine(hist, ranks)
    for i, (known, bits) in enumerate(RADIX_SCHEDULE[1:], start=2):
        def radix_pass(h, batch, p):
            acts, _, valid, _ = model(batch, p)
            return h.update(upsample(acts), valid)
        hist = run(f"radix{i}", radix_pass,
                   RadixHistogram.empty(units, len(all_levels), known, bits, prefix), params)
        prefix, ranks = radix_refine(hist, ranks)
    thresholds = key_to_float(prefix).T
    return {q: np.asarray(t, np.float32) for q, t in zip(all_levels, thresholds)}, topstat


def _store(call, source, acts_shape, seg_shape, num_labels, batch_size, params, cache_dir,
           devices):
    """The layer's activations and segmentation over this process's slice, kept in
    host memory or on disk by ``runtime.activations``' rule, or None if they fit
    neither (or the store is off)."""
    start, stop = sweep.process_slice(source.num_examples)
    size = activations.nbytes(stop - start, acts_shape.shape[1:], acts_shape.dtype,
                              seg_shape.shape[1:], num_labels)
    where = activations.place(size, cache_dir)
    if where is None:
        return None
    return activations.capture(call, source, batch_size=batch_size, params=params,
                               where=where, num_labels=num_labels, directory=cache_dir,
                               devices=devices)


def _read_stored(batch, p):
    return batch["acts"], batch["seg"]


def _name_image(source, i: int) -> str:
    """``image i`` of ``source``, with its file where the source has one."""
    while not hasattr(source, "paths") and hasattr(source, "inner"):
        source = source.inner  # a prefix of a folder
    paths = getattr(source, "paths", None)
    return f"image {i} ({paths[i]})" if paths is not None and i < len(paths) else f"image {i}"


def _callable_identity(fn) -> Any:
    """An upsampler's part of a cache key: its fields (an ``Upsampler``, by value), or
    its qualified name (a function: what it closes over is in the run's identity)."""
    if hasattr(fn, "__dataclass_fields__"):
        return fn
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
