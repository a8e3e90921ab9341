"""Significance of unit-concept IoUs: image-permutation p-values and bootstrap
intervals, tallied in one compiled step per batch.

For a tested pair (unit ``u``, label ``c``) at threshold ``t_u``, with per image
``i`` the unit's mask ``A_i = acts_up > t_u`` and the label's mask ``S_i`` (any of
the ``K`` segmentation layers equals ``c``) on the segmentation grid:

    IoU = I / (|A| + |S| - I),   I = sum_i |A_i ∧ S_i|.

Null hypothesis: the unit's maps carry no information about *their own* image's
segmentation beyond what any image's would, i.e. pairing unit maps with another
image's segmentation changes nothing. Under it, ``I_pi = sum_i |A_i ∧ S_pi(i)|`` is
distributed as ``I`` for a permutation ``pi`` of the images; ``|A|`` and ``|S|``
do not depend on ``pi`` (so the union's totals are permutation-invariant and
only the intersection changes), so ``IoU_pi >= IoU`` iff ``I_pi >= I``, and

    p = (1 + #{pi : I_pi >= I}) / (1 + P)

over ``P`` random permutations (ties count against the unit: conservative).

Permutations act within each step's batch (on one device, its shard of the
batch): a batch's pair matrix ``M[u, i, j] = |A_i ∧ S_j|`` (one batched matmul,
``b * b * H * W`` per pair) gives every permutation's intersection as a gather,
``sum_i M[u, i, pi(i)]``, so thousands of permutations cost little. Each is a
uniform random permutation of the batch's valid images, drawn independently
per batch from the step's first global image index; permutations of disjoint
blocks are a subgroup of all permutations under which i.i.d. images are
exchangeable, so the test is exact (valid at every level) for any batch size.
The p-values are a Monte Carlo estimate, so they depend on ``seed``, the batch
size and the device count (which images share a block), not on the data order.

The bootstrap resamples images: replicate ``r`` weighs image ``i`` by a Poisson(1)
count drawn from ``(seed, r, i's global index)`` (the streaming "Poisson
bootstrap", independent of batching), giving ``IoU_r`` from the weighted sums of
the per-image ``|A_i ∧ S_i|``, ``|A_i|``, ``|S_i|``. Thresholds and labels are
held fixed (the interval is conditional on them).

Every count is an exact integer: per-image counts come from a float32 matmul of
0/1 values (exact below 2**24 pixels per image) and are added to ``Wide``
counters. The p-value is for the tested label; when that label was chosen as a
unit's best of many, the selection is not corrected for.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdissect.stats.iou import pixel_label_ids
from jaxdissect.stats.wide import Wide

#: tested pairs per chunk of the pair-matrix matmul (bounds the step's memory)
CHUNK = 64
_MAX_PIXELS = 1 << 24  # per image: float32 counts of 0/1 products stay exact
_MAX_WEIGHT = 16  # bound on a Poisson(1) weight (float32 uniforms never reach w = 12)
#: P(w <= k) for k = 0 .. _MAX_WEIGHT - 1 of Poisson(1): w = #{k : u >= cdf[k]}
_POISSON_CDF = np.cumsum([np.exp(-1.0) / math.factorial(k) for k in range(_MAX_WEIGHT)]
                         ).astype(np.float32)


@struct.dataclass
class PermutationTally:
    """``T`` tested pairs: ``units``, ``labels`` ``[T]`` int32 and ``thresholds``
    ``[T]`` float32 (the unit's); ``inter`` / ``unit_area`` / ``label_area``
    ``[T]`` observed counts; ``perm_inter`` ``[P, T]`` each permutation's
    intersection; ``boot_inter`` / ``boot_unit`` / ``boot_label`` ``[R, T]`` each
    bootstrap replicate's weighted counts; ``seed`` the draws' seed."""

    units: jnp.ndarray
    labels: jnp.ndarray
    thresholds: jnp.ndarray
    inter: Wide
    unit_area: Wide
    label_area: Wide
    perm_inter: Wide
    boot_inter: Wide
    boot_unit: Wide
    boot_label: Wide
    seed: int = struct.field(pytree_node=False, default=0)

    @classmethod
    def empty(cls, units, labels, thresholds, permutations: int = 1000,
              replicates: int = 1000, seed: int = 0) -> "PermutationTally":
        """Tests unit ``units[t]`` (at ``thresholds[t]``) against label ``labels[t]``."""
        units = np.asarray(units, np.int32).reshape(-1)
        labels = np.asarray(labels, np.int32).reshape(-1)
        thresholds = np.asarray(thresholds, np.float32).reshape(-1)
        if not len(units) == len(labels) == len(thresholds) > 0:
            raise ValueError(f"need as many units, labels and thresholds (at least one), "
                             f"got {len(units)}, {len(labels)}, {len(thresholds)}")
        if permutations <= 0 or replicates <= 0:
            raise ValueError(f"permutations and replicates must be positive, got "
                             f"{permutations} and {replicates}")
        t = len(units)
        return cls(jnp.asarray(units), jnp.asarray(labels), jnp.asarray(thresholds),
                   Wide.zeros((t,)), Wide.zeros((t,)), Wide.zeros((t,)),
                   Wide.zeros((permutations, t)), Wide.zeros((replicates, t)),
                   Wide.zeros((replicates, t)), Wide.zeros((replicates, t)), seed=int(seed))

    @property
    def num_tested(self) -> int:
        return self.units.shape[0]

    @property
    def permutations(self) -> int:
        return self.perm_inter.hi.shape[0]

    @property
    def replicates(self) -> int:
        return self.boot_inter.hi.shape[0]

    def update(self, acts: jnp.ndarray, seg: jnp.ndarray, valid: jnp.ndarray | None,
               index: jnp.ndarray) -> "PermutationTally":
        """``acts`` ``[b, H, W, units]`` on the segmentation grid, ``seg`` ``[b, K, H,
        W]`` int, ``valid`` ``[b]`` bool (padding ignored), ``index`` ``[b]`` int32
        global image indices (they key the random draws)."""
        b, h, w, _ = acts.shape
        if seg.ndim != 4 or seg.shape[0] != b or seg.shape[2:] != (h, w):
            raise ValueError(f"seg must be [{b}, K, {h}, {w}] to match acts {acts.shape}, "
                             f"got {seg.shape}")
        if h * w >= _MAX_PIXELS or b * h * w * _MAX_WEIGHT >= 1 << 30:
            raise ValueError(f"{b} images of {h}x{w} pixels per step: too many for exact "
                             "int32 step counts; use smaller batches")
        if valid is None:
            valid = jnp.ones((b,), bool)
        index = jnp.asarray(index, jnp.int32)
        perm = batch_permutations(self._key(0, index[0]), valid, self.permutations)  # [P, b]
        weights = bootstrap_weights(self._key(1, 0), index, valid, self.replicates)  # [R, b]
        ids = pixel_label_ids(seg, valid, 1 << 30).reshape(b, h * w, -1)  # dropped: 2**30
        inter_i, area_i, label_i, perm_i = _chunked_counts(
            acts.reshape(b, h * w, -1), ids, valid, self.units, self.labels,
            self.thresholds, perm)
        boot = [jnp.einsum("rb,bt->rt", weights, x, preferred_element_type=jnp.int32)
                for x in (inter_i, area_i, label_i)]
        return self.replace(
            inter=self.inter.add(inter_i.sum(0)), unit_area=self.unit_area.add(area_i.sum(0)),
            label_area=self.label_area.add(label_i.sum(0)),
            perm_inter=self.perm_inter.add(perm_i),
            boot_inter=self.boot_inter.add(boot[0]), boot_unit=self.boot_unit.add(boot[1]),
            boot_label=self.boot_label.add(boot[2]))

    def merge(self, other: "PermutationTally") -> "PermutationTally":
        return self.replace(**{f: getattr(self, f).merge(getattr(other, f)) for f in (
            "inter", "unit_area", "label_area", "perm_inter", "boot_inter", "boot_unit",
            "boot_label")})

    def _key(self, stream: int, at) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed), stream), at)

    # ------------------------------------------------------------------ results

    def iou(self) -> np.ndarray:
        """Observed IoU ``[T]`` float64."""
        return _iou(self.inter.to_numpy(), self.unit_area.to_numpy(),
                    self.label_area.to_numpy())

    def null_iou(self) -> np.ndarray:
        """``[P, T]``: each permutation's IoU (the null distribution)."""
        return _iou(self.perm_inter.to_numpy(), self.unit_area.to_numpy()[None],
                    self.label_area.to_numpy()[None])

    def p_values(self) -> np.ndarray:
        """``[T]``: ``(1 + #{I_pi >= I}) / (1 + P)``."""
        exceed = np.sum(self.perm_inter.to_numpy() >= self.inter.to_numpy()[None], axis=0)
        return (1.0 + exceed) / (1.0 + self.permutations)

    def bootstrap_iou(self) -> np.ndarray:
        """``[R, T]``: each bootstrap replicate's IoU."""
        return _iou(self.boot_inter.to_numpy(), self.boot_unit.to_numpy(),
                    self.boot_label.to_numpy())

    def interval(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Percentile bootstrap interval ``(low [T], high [T])`` of the IoU."""
        if not 0 < level < 1:
            raise ValueError(f"interval level must be in (0, 1), got {level}")
        reps = self.bootstrap_iou()
        low, high = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2], axis=0)
        return low, high


def _iou(inter, unit_area, label_area) -> np.ndarray:
    union = unit_area + label_area - inter
    return np.divide(inter, union, out=np.zeros(np.shape(inter)), where=union > 0)


def benjamini_hochberg(p_values, fdr: float) -> np.ndarray:
    """``[n]`` bool: the hypotheses rejected by the Benjamini-Hochberg step-up
    procedure at false-discovery rate ``fdr`` (the largest ``k`` with ``p_(k) <= k
    fdr / n``, and every p-value up to it). NaN p-values are never rejected and do
    not count in ``n``."""
    if not 0 < fdr < 1:
        raise ValueError(f"false-discovery rate must be in (0, 1), got {fdr}")
    p = np.asarray(p_values, np.float64).reshape(-1)
    tested = ~np.isnan(p)
    n = int(tested.sum())
    out = np.zeros(p.shape, bool)
    if n == 0:
        return out
    ordered = np.sort(p[tested])
    passing = np.flatnonzero(ordered <= fdr * np.arange(1, n + 1) / n)
    if len(passing):
        out[tested] = p[tested] <= ordered[passing[-1]]
    return out


def batch_permutations(key: jax.Array, valid: jnp.ndarray, count: int) -> jnp.ndarray:
    """``[count, b]`` int32: uniform random permutations ``pi`` of the valid images
    (``pi(i)`` valid for valid ``i``; ``pi(i) = i`` for padding)."""
    b = valid.shape[0]
    slot = jnp.arange(b)
    # valid images first, in index order, then padding
    positions = jnp.argsort(jnp.where(valid, slot, b + slot))
    keys = jax.random.uniform(key, (count, b))
    last = 2.0 + slot[None, :] / b  # padding sorts after every valid image, in order
    shuffled = jnp.argsort(jnp.where(valid[positions][None, :], keys, last), axis=1)
    perm = jnp.zeros((count, b), jnp.int32)
    return perm.at[:, positions].set(positions[shuffled].astype(jnp.int32))


def bootstrap_weights(key: jax.Array, index: jnp.ndarray, valid: jnp.ndarray,
                      replicates: int) -> jnp.ndarray:
    """``[R, b]`` int32 Poisson(1) weights, image ``i``'s drawn from ``(key,
    index[i])`` alone (inverse CDF of one uniform each); 0 for padding."""
    uniform = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i),
                                                    (replicates,)))(index)  # [b, R]
    draw = jnp.sum(uniform[..., None] >= _POISSON_CDF[None, None, :], axis=-1,
                   dtype=jnp.int32)
    return jnp.where(valid[:, None], draw, 0).T


def _chunked_counts(acts, ids, valid, units, labels, thresholds, perm):
    """Per-image counts ``[b, T]`` (intersection, unit area, label area) and the
    permutations' intersections ``[P, T]``, in chunks of ``CHUNK`` tested pairs."""
    t = units.shape[0]
    chunks = -(-t // CHUNK)
    pad = chunks * CHUNK - t

    def padded(x, fill):
        return jnp.concatenate([x, jnp.full((pad,), fill, x.dtype)]).reshape(chunks, CHUNK)

    b = acts.shape[0]
    rows = jnp.arange(b)

    def one(args):
        u, c, th = args  # [CHUNK] each
        a = (acts[:, :, u] > th[None, None, :]) & valid[:, None, None]  # [b, q, C]
        # [b, q, C]; padding images have no label
        s = jnp.any(ids[:, :, :, None] == c[None, None, None, :], axis=2)
        pair = jnp.einsum("iqc,jqc->cij", a.astype(jnp.float32), s.astype(jnp.float32))
        pair = jnp.round(pair).astype(jnp.int32)  # [C, b, b]
        inter = jnp.diagonal(pair, axis1=1, axis2=2).T  # [b, C]
        permuted = pair[:, rows[None, :], perm].sum(-1).T  # [P, C]
        return inter, a.sum(1, dtype=jnp.int32), s.sum(1, dtype=jnp.int32), permuted

    # padding pairs test unit 0 against label -1 (never present): all counts 0
    inter, area, label, permuted = jax.lax.map(
        one, (padded(units, 0), padded(labels, -1), padded(thresholds, np.inf)))

    def flat(x):  # [chunks, n, CHUNK] -> [n, T]
        return jnp.moveaxis(x, 0, 1).reshape(x.shape[1], -1)[:, :t]

    return flat(inter), flat(area), flat(label), flat(permuted)
