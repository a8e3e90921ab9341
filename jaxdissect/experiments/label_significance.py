"""Significance of a dissection's unit labels: a permutation p-value for every
tested unit's best label, with the choice of that label among all labels built
into the null, and a bootstrap interval of its IoU.

``significance(compute, source, result, ...)`` runs one more sweep over ``source``
with the same ``compute`` (and upsampling) as ``dissect``, at the dissection's
thresholds, tallying ``stats.permutation.PermutationTally`` for each tested unit:
per block of ``block`` consecutive images, the pair counts of every unit's masks
against every image's masks of every label, thousands of within-block image
permutations read from them, and Poisson-bootstrap sums over images; one compiled
step, fixed shapes. The null: a unit's maps are unrelated to their own image's
segmentation (pairing them with other images' segmentations changes nothing), so a
p-value answers "how often would a best label this good appear by chance, given how
much and where this unit fires and where every concept appears". See
``stats.permutation`` for the test.

The sweep's examples are whole blocks (``BlockSource``), so batches, devices and
processes always split the data between blocks, and the p-values and intervals are
identical at any batch size, device count and process count.

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
import jax.numpy as jnp
import numpy as np

from jaxdissect.experiments import results
from jaxdissect.runtime import sweep
from jaxdissect.runtime.cache import RunCache
from jaxdissect.runtime.devices import pad_batch
from jaxdissect.runtime.fingerprint import data_identity, fingerprint
from jaxdissect.stats.permutation import (
    BLOCK,
    PermutationTally,
    benjamini_hochberg,
    candidate_labels,
)
from jaxdissect.stats.upsample import Upsampler


@results.typed
@dataclasses.dataclass
class Significance:
    """For ``T`` tested (unit, label) pairs: ``units``, ``labels`` ``[T]`` int;
    ``iou`` ``[T]`` observed; ``p_value`` ``[T]`` image-permutation p-value of the
    best label's IoU against the permutations' best IoU over all labels;
    ``iou_low`` / ``iou_high`` ``[T]`` the bootstrap interval at ``level``;
    ``null_iou`` ``[T]`` the mean best IoU under permutation (chance level) over the
    labels that can reach the observed best (``stats.permutation.candidate_labels``;
    at most the chance level over every label);
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

    def significant_labels(self, num_units: int, fdr: float = 0.01) -> np.ndarray:
        """``[num_units]`` int: each unit's tested label where it is a discovery at
        false-discovery rate ``fdr``, else 0 (untested units too)."""
        out = np.zeros(num_units, np.int64)
        keep = self.discoveries(fdr)
        out[self.units[keep]] = self.labels[keep]
        return out

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
                 batch_size: int = 32, block: int = BLOCK, params: Any = None,
                 cache: RunCache | None = None,
                 checkpoint_every: int = 20, progress: bool = True,
                 devices: Sequence[jax.Device] | None = None) -> Significance:
    """Tests ``result``'s (a ``DissectResult``) best label of each of ``units``
    (default: its labelled units) at its thresholds; see the module docstring.

    ``compute``, ``upsample``, ``params``, ``batch_size`` and ``devices`` as given to
    ``dissect`` (the observed IoUs then equal the dissection's; a mismatch raises);
    ``batch_size`` is rounded up to whole blocks and changes no result.
    ``permutations``: image permutations per unit (the smallest p-value is ``1 /
    (permutations + 1)``); ``block``: images per permutation block (the permutations
    pair images within a block); ``replicates``: bootstrap replicates; ``level``: the
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
    candidates = candidate_labels(np.asarray(result.unit_area)[units], result.label_area,
                                  np.asarray(result.best_iou)[units])
    empty = PermutationTally.empty(units, labels, thresholds, result.iou.shape[1],
                                   permutations, replicates, seed, block, candidates)

    def call(batch, p):
        return compute(batch) if params is None else compute(batch, p)

    def step(stat, batch, p):
        batch = dict(batch)
        valid = batch.pop("valid")[:, None] & batch.pop(BlockSource.VALID)
        blocks = batch.pop("index")
        batch = {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items()}
        batch["index"] = (blocks[:, None] * block + jnp.arange(block)[None, :]).reshape(-1)
        acts, seg = call(batch, p)
        up = upsample
        if up is None:
            data, grid = tuple(acts.shape[1:3]), tuple(seg.shape[2:])
            up = (lambda a: a) if data == grid else Upsampler.plain(data, grid)
        return stat.update(up(acts), seg, valid.reshape(-1), batch["index"])

    key = None
    if cache is not None:
        key = cache.key(
            weights=None if params is None else fingerprint(params),
            data=data_identity(source), units=units, labels=labels,
            thresholds=thresholds, permutations=permutations, replicates=replicates,
            seed=seed, block=block, test="best of all labels", candidates=candidates,
            upsample=None if upsample is None else fingerprint(upsample))
    tally = sweep.sweep(step, empty, BlockSource(source, block),
                        batch_size=-(-batch_size // block), replicated=(params,),
                        name="significance", key=key,
                        cache_dir=None if cache is None else cache.folder,
                        checkpoint_every=checkpoint_every, progress=progress,
                        devices=devices)
    sig = Significance.from_tally(tally, level)
    # The test reads its own pass's counts (observed and permuted alike). A model's
    # float arithmetic may differ with the per-device batch (XLA picks kernels by
    # shape), so a pixel at a threshold can flip between this pass and the dissection's:
    # a few pixels are allowed, a different compute, upsampling or weights is not.
    expected = np.asarray(result.intersections)[units, labels].astype(np.int64)
    got = tally.inter.to_numpy().astype(np.int64)
    if np.any(np.abs(got - expected) > np.maximum(RECOUNT_PIXELS, RECOUNT_SHARE * expected)):
        raise ValueError("the significance pass counted different intersections than the "
                         "dissection: pass the same compute, upsample and params")
    return sig



#: how far the significance pass's intersections may differ from the dissection's
#: (pixels at a threshold flipped by float rounding at another batch shape)
RECOUNT_PIXELS, RECOUNT_SHARE = 4, 0.01


class BlockSource:
    """``source`` seen as blocks of ``block`` consecutive examples: example ``k`` is
    examples ``[k block, (k+1) block)``, each array ``[n, block, ...]``, the last
    block padded (repeating its last example) and ``VALID`` ``[n, block]`` marking
    the real ones."""

    VALID = "block_valid"

    def __init__(self, source, block: int):
        if block <= 0:
            raise ValueError(f"block must be positive, got {block}")
        self.source, self.block = source, int(block)
        self.num_examples = -(-source.num_examples // self.block)

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        first, last = start * self.block, min(stop * self.block, self.source.num_examples)
        data = dict(self.source.batch(first, last))
        if self.VALID in data:
            raise ValueError(f"source batches may not have a {self.VALID!r} key")
        size = (stop - start) * self.block
        data, valid = pad_batch(data, size)
        data[self.VALID] = valid
        return {k: np.asarray(v).reshape((stop - start, self.block) + np.shape(v)[1:])
                for k, v in data.items()}
