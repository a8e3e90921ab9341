"""Significance of a dissection's unit labels: a permutation p-value and a bootstrap
interval for every labelled unit's IoU with its label.

``significance(compute, source, result, ...)`` runs one more sweep over ``source``
with the same ``compute`` (and upsampling) as ``dissect``, at the dissection's
thresholds, tallying ``stats.permutation.PermutationTally`` for each tested
``(unit, best label)`` pair: per batch, the pair matrix of every unit's masks
against every image's label masks, thousands of within-batch image permutations
read from it, and Poisson-bootstrap sums over images; one compiled step, fixed
shapes. The null: a unit's maps are unrelated to their own image's segmentation
(pairing them with other images' segmentations changes nothing), so a p-value
answers "how often would this IoU appear by chance, given how much and where this
unit fires and this concept appears". See ``stats.permutation`` for the test.

Example::

    res = dissect(compute, source, labels, upsample=up, params=params)
    sig = significance(compute, source, res, upsample=up, params=params)
    res = res.with_significance(sig)   # p_value, iou_low, iou_high per unit
    sig.discoveries(0.01).sum()        # labels surviving a 1% false-discovery rate
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np

from jaxdissect.runtime import sweep
from jaxdissect.runtime.cache import RunCache
from jaxdissect.runtime.fingerprint import data_identity, fingerprint
from jaxdissect.stats.permutation import PermutationTally, benjamini_hochberg
from jaxdissect.stats.upsample import Upsampler


@dataclasses.dataclass
class Significance:
    """For ``T`` tested (unit, label) pairs: ``units``, ``labels`` ``[T]`` int;
    ``iou`` ``[T]`` observed; ``p_value`` ``[T]`` image-permutation p-value;
    ``iou_low`` / ``iou_high`` ``[T]`` the bootstrap interval at ``level``;
    ``null_iou`` ``[T]`` the mean IoU under permutation (chance level);
    ``permutations``, ``replicates``, ``seed`` as drawn."""

    units: np.ndarray
    labels: np.ndarray
    iou: np.ndarray
    p_value: np.ndarray
    iou_low: np.ndarray
    iou_high: np.ndarray
    null_iou: np.ndarray
    permutations: int
    replicates: int
    level: float
    seed: int

    @classmethod
    def from_tally(cls, tally: PermutationTally, level: float = 0.95) -> "Significance":
        low, high = tally.interval(level)
        return cls(units=np.asarray(tally.units, np.int64),
                   labels=np.asarray(tally.labels, np.int64), iou=tally.iou(),
                   p_value=tally.p_values(), iou_low=low, iou_high=high,
                   null_iou=tally.null_iou().mean(axis=0), permutations=tally.permutations,
                   replicates=tally.replicates, level=float(level), seed=tally.seed)

    def discoveries(self, fdr: float = 0.01) -> np.ndarray:
        """``[T]`` bool: the pairs kept by Benjamini-Hochberg at false-discovery rate
        ``fdr`` over all tested pairs."""
        return benjamini_hochberg(self.p_value, fdr)

    def per_unit(self, num_units: int) -> dict[str, np.ndarray]:
        """``{"p_value", "iou_low", "iou_high", "null_iou"}``, each ``[num_units]``
        float64, NaN for untested units."""
        out = {}
        for name in ("p_value", "iou_low", "iou_high", "null_iou"):
            full = np.full(num_units, np.nan)
            full[self.units] = getattr(self, name)
            out[name] = full
        return out

    def to_json(self) -> dict:
        return {"permutations": self.permutations, "replicates": self.replicates,
                "level": self.level, "seed": self.seed,
                **{f: [v.item() for v in getattr(self, f)] for f in (
                    "units", "labels", "iou", "p_value", "iou_low", "iou_high", "null_iou")}}

    @classmethod
    def from_json(cls, d: dict) -> "Significance":
        arrays = {f: np.asarray(d[f], np.int64 if f in ("units", "labels") else np.float64)
                  for f in ("units", "labels", "iou", "p_value", "iou_low", "iou_high",
                            "null_iou")}
        return cls(permutations=int(d["permutations"]), replicates=int(d["replicates"]),
                   level=float(d["level"]), seed=int(d["seed"]), **arrays)


def significance(compute: Callable, source, result, *,
                 upsample: Callable[[jax.Array], jax.Array] | None = None,
                 units: Sequence[int] | None = None, permutations: int = 1000,
                 replicates: int = 1000, level: float = 0.95, seed: int = 0,
                 batch_size: int = 32, params: Any = None, cache: RunCache | None = None,
                 checkpoint_every: int = 20, progress: bool = True,
                 devices: Sequence[jax.Device] | None = None) -> Significance:
    """Tests ``result``'s (a ``DissectResult``) best label of each of ``units``
    (default: its labelled units) at its thresholds; see the module docstring.

    ``compute``, ``upsample``, ``params``, ``batch_size`` and ``devices`` as given to
    ``dissect`` (the observed IoUs then equal the dissection's; a mismatch raises).
    ``permutations``: image permutations per pair (the smallest p-value is ``1 /
    (permutations + 1)``); ``replicates``: bootstrap replicates; ``level``: the
    interval's coverage; ``seed``: the draws'. With ``cache`` (the run's
    ``runtime.cache.RunCache``) the sweep checkpoints like dissect's passes.
    """
    if getattr(result, "iou_rule", "pnas") != "pnas":
        raise ValueError(f"label significance is defined for the pnas IoU rule (a unit's "
                         f"whole area in the union), not {result.iou_rule!r}")
    if units is None:
        units = np.flatnonzero(result.labelled)
    units = np.asarray(units, np.int64).reshape(-1)
    if len(units) == 0:
        raise ValueError("no units to test (no unit is labelled)")
    if units.min() < 0 or units.max() >= result.num_units:
        raise ValueError(f"units must be in 0..{result.num_units - 1}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    labels = np.asarray(result.best_label)[units]
    thresholds = np.asarray(result.thresholds, np.float32)[units]
    empty = PermutationTally.empty(units, labels, thresholds, permutations, replicates, seed)

    def call(batch, p):
        return compute(batch) if params is None else compute(batch, p)

    def step(stat, batch, p):
        batch = dict(batch)
        valid = batch.pop("valid")
        acts, seg = call(batch, p)
        up = upsample
        if up is None:
            data, grid = tuple(acts.shape[1:3]), tuple(seg.shape[2:])
            up = (lambda a: a) if data == grid else Upsampler.plain(data, grid)
        return stat.update(up(acts), seg, valid, batch["index"])

    key = None
    if cache is not None:
        key = cache.key(
            weights=None if params is None else fingerprint(params),
            data=data_identity(source), units=units, labels=labels,
            thresholds=thresholds, permutations=permutations, replicates=replicates,
            seed=seed, upsample=None if upsample is None else fingerprint(upsample))
    tally = sweep.sweep(step, empty, source, batch_size=batch_size, replicated=(params,),
                        name="significance", key=key,
                        cache_dir=None if cache is None else cache.folder,
                        checkpoint_every=checkpoint_every, progress=progress,
                        devices=devices)
    sig = Significance.from_tally(tally, level)
    expected = np.asarray(result.intersections)[units, labels]
    if not np.array_equal(tally.inter.to_numpy(), expected):
        raise ValueError("the significance pass counted different intersections than the "
                         "dissection: pass the same compute, upsample, params and batch size")
    return sig

