"""Significance of unit-concept IoUs: image-permutation p-values with the label
selection built in, and bootstrap intervals, tallied in one compiled step per batch.

For a tested unit ``u`` at threshold ``t_u``, with per image ``i`` the unit's mask
``A_i = acts_up > t_u`` and label ``c``'s mask ``S_i^c`` (any of the ``K``
segmentation layers equals ``c``) on the segmentation grid:

    IoU(c) = I(c) / (|A| + |S^c| - I(c)),   I(c) = sum_i |A_i ∧ S_i^c|.

A unit is labelled with its best label, ``argmax_c IoU(c)`` over labels 1..L-1, so
the statistic tested is the maximum ``M = max_c IoU(c)``, not one label's IoU.

Null hypothesis: the unit's maps carry no information about *their own* image's
segmentation beyond what any image's would, i.e. pairing unit maps with another
image's segmentation changes nothing. Under it, for a permutation ``pi`` of the
images, ``M_pi = max_c I_pi(c) / (|A| + |S^c| - I_pi(c))`` with ``I_pi(c) = sum_i
|A_i ∧ S_pi(i)^c|`` is distributed as ``M`` (areas do not depend on ``pi``), and

    p = (1 + #{pi : M_pi >= M}) / (1 + P)

over ``P`` random permutations (ties count against the unit: conservative). Every
permutation is read for every label at once, so a unit whose best label is only the
best of many chance overlaps is not significant: the selection is in the null.

Permutations act within *blocks* of ``block`` consecutive global image indices
(images ``[k block, (k+1) block)`` form block ``k``); block ``k``'s ``P``
permutations are drawn from ``(seed, k)`` alone, as uniform permutations of its
valid images. Permutations of disjoint blocks are a subgroup of all permutations,
under which i.i.d. images are exchangeable, so the test is exact at every level;
and because blocks and draws depend only on global indices, the p-values are the
same at any batch size, device count and process count (``update`` needs each
shard to hold whole blocks: ``experiments.label_significance`` feeds it so).
Per block, the pair counts ``N[u, c, i, j] = |A_i^u ∧ S_j^c|`` (one batched
matmul) give every permutation's intersections as ``sum_i N[u, c, i, pi(i)]``
(a contraction with the permutations' one-hot matrices), so thousands of
permutations cost little.

The bootstrap resamples images: replicate ``r`` weighs image ``i`` by a Poisson(1)
count drawn from ``(seed, r, i's global index)`` (the streaming "Poisson
bootstrap", independent of batching), giving the tested label's ``IoU_r`` from the
weighted sums of the per-image ``|A_i ∧ S_i|``, ``|A_i|``, ``|S_i|``. Thresholds
and labels are held fixed (the interval is conditional on them); IoUs lie in [0, 1]
and so do the percentile intervals.

Only labels that can reach the observed maximum are read under permutation: since
``I(c) <= min(|A|, |S^c|)`` and the union is at least ``max(|A|, |S^c|)``, no
permutation gives label ``c`` an IoU above ``min(|A|, |S^c|) / max(|A|, |S^c|)``, so
a label whose bound is below ``M`` never decides whether ``M_pi >= M``. Each unit's
``candidates`` (``candidate_labels``, from the dissection's areas) are the labels
whose bound reaches ``M``: the p-values are those of all labels, at a fraction of
the memory (``[P, T, K]`` counts, ``K`` the most candidates of any unit).

Every count is an exact integer: per-image counts come from float32 matmuls of 0/1
values, and the permutations' sums from a full-precision float32 contraction, both
exact below 2**24 pixels per step and device; they are added to ``Wide`` counters.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdissect.stats.iou import pixel_label_ids
from jaxdissect.stats.wide import Wide

#: tested units per chunk of the pair-count matmul (bounds the step's memory)
CHUNK = 32
#: images per permutation block (the default)
BLOCK = 8
_MAX_PIXELS = 1 << 24  # per step and device: float32 sums of counts stay exact
_MAX_WEIGHT = 16  # bound on a Poisson(1) weight (float32 uniforms never reach w = 12)
#: P(w <= k) for k = 0 .. _MAX_WEIGHT - 1 of Poisson(1): w = #{k : u >= cdf[k]}
_POISSON_CDF = np.cumsum([np.exp(-1.0) / math.factorial(k) for k in range(_MAX_WEIGHT)]
                         ).astype(np.float32)
_DROPPED = 1 << 30  # pixel_label_ids' id for a pixel without a (valid) label


@struct.dataclass
class PermutationTally:
    """``T`` tested units: ``units``, ``labels`` ``[T]`` int32 (the label whose IoU
    the bootstrap intervals) and ``thresholds`` ``[T]`` float32 (the unit's);
    ``inter`` / ``unit_area`` / ``label_area`` ``[T]`` the tested label's observed
    counts; ``all_inter`` ``[T, L]`` every label's observed intersection,
    ``all_label_area`` ``[L]`` every label's area; ``candidates`` ``[T, K]`` int32 the
    labels read under permutation; ``perm_inter`` ``[P, T, K]`` each permutation's
    intersections with them; ``boot_inter`` / ``boot_unit`` / ``boot_label``
    ``[R, T]`` each bootstrap replicate's weighted counts; ``seed`` the draws' seed,
    ``block`` the images per permutation block."""

    units: jnp.ndarray
    labels: jnp.ndarray
    thresholds: jnp.ndarray
    inter: Wide
    unit_area: Wide
    label_area: Wide
    all_inter: Wide
    all_label_area: Wide
    candidates: jnp.ndarray
    perm_inter: Wide
    boot_inter: Wide
    boot_unit: Wide
    boot_label: Wide
    seed: int = struct.field(pytree_node=False, default=0)
    block: int = struct.field(pytree_node=False, default=BLOCK)

    @classmethod
    def empty(cls, units, labels, thresholds, num_labels: int, permutations: int = 1000,
              replicates: int = 1000, seed: int = 0, block: int = BLOCK, candidates=None
              ) -> "PermutationTally":
        """Tests unit ``units[t]`` (at ``thresholds[t]``) for its best of labels
        ``1 .. num_labels - 1``, with the interval of label ``labels[t]``.
        ``candidates`` ``[T, K]``: the labels that can reach each unit's best IoU
        (``candidate_labels``; default every label)."""
        units = np.asarray(units, np.int32).reshape(-1)
        labels = np.asarray(labels, np.int32).reshape(-1)
        thresholds = np.asarray(thresholds, np.float32).reshape(-1)
        if not len(units) == len(labels) == len(thresholds) > 0:
            raise ValueError(f"need as many units, labels and thresholds (at least one), "
                             f"got {len(units)}, {len(labels)}, {len(thresholds)}")
        if permutations <= 0 or replicates <= 0 or block <= 0:
            raise ValueError(f"permutations, replicates and block must be positive, got "
                             f"{permutations}, {replicates} and {block}")
        if num_labels < 2 or labels.min() < 1 or labels.max() >= num_labels:
            raise ValueError(f"labels must be in 1..{num_labels - 1} (num_labels "
                             f"{num_labels}, label 0 is 'no label')")
        t, ell = len(units), int(num_labels)
        if candidates is None:
            candidates = np.tile(np.arange(1, ell), (t, 1))
        candidates = np.asarray(candidates, np.int32)
        if candidates.ndim != 2 or candidates.shape[0] != t or candidates.shape[1] < 1 or \
                candidates.min() < 1 or candidates.max() >= ell:
            raise ValueError(f"candidates must be [{t}, K >= 1] labels in 1..{ell - 1}, got "
                             f"shape {candidates.shape}")
        k = candidates.shape[1]
        return cls(jnp.asarray(units), jnp.asarray(labels), jnp.asarray(thresholds),
                   Wide.zeros((t,)), Wide.zeros((t,)), Wide.zeros((t,)),
                   Wide.zeros((t, ell)), Wide.zeros((ell,)), jnp.asarray(candidates),
                   Wide.zeros((permutations, t, k)), Wide.zeros((replicates, t)),
                   Wide.zeros((replicates, t)), Wide.zeros((replicates, t)),
                   seed=int(seed), block=int(block))

    @property
    def num_tested(self) -> int:
        return self.units.shape[0]

    @property
    def num_labels(self) -> int:
        return self.all_label_area.hi.shape[0]

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
        global image indices (they key the random draws). The images come in whole
        blocks: ``b`` a multiple of ``block``, slots ``[k block, (k+1) block)`` holding
        one block's images in index order (its missing images as padding)."""
        b, h, w, _ = acts.shape
        if seg.ndim != 4 or seg.shape[0] != b or seg.shape[2:] != (h, w):
            raise ValueError(f"seg must be [{b}, K, {h}, {w}] to match acts {acts.shape}, "
                             f"got {seg.shape}")
        if b % self.block:
            raise ValueError(f"a step's {b} images are not whole blocks of {self.block}")
        if b * h * w >= _MAX_PIXELS:
            raise ValueError(f"{b} images of {h}x{w} pixels per step: too many for exact "
                             "float32 step counts; use smaller batches")
        if valid is None:
            valid = jnp.ones((b,), bool)
        index = jnp.asarray(index, jnp.int32)
        nb, bl = b // self.block, self.block
        block_valid = valid.reshape(nb, bl)
        perm = jax.vmap(lambda k, v: batch_permutations(self._key(0, k), v,
                                                        self.permutations))(
            index[::bl] // bl, block_valid)  # [nb, P, bl]
        onehot = ((perm[..., None] == jnp.arange(bl)[None, None, None, :])
                  & block_valid[:, None, :, None])
        onehot = jnp.moveaxis(onehot, 1, 0).astype(jnp.float32)  # [P, nb, i, j]
        weights = bootstrap_weights(self._key(1, 0), index, valid, self.replicates)  # [R, b]
        ids = pixel_label_ids(seg, valid, _DROPPED).reshape(b, h * w, -1)
        # [b, q, L] 0/1: pixel_label_ids keeps each label once per pixel
        s_all = jax.nn.one_hot(ids, self.num_labels, dtype=jnp.float32).sum(2)
        inter_i, area_i, label_i, all_inter, permuted = _chunked_counts(
            acts.reshape(b, h * w, -1), s_all, valid, self.units, self.labels,
            self.thresholds, self.candidates, onehot)
        boot = [jnp.einsum("rb,bt->rt", weights, x, preferred_element_type=jnp.int32)
                for x in (inter_i, area_i, label_i)]
        return self.replace(
            inter=self.inter.add(inter_i.sum(0)), unit_area=self.unit_area.add(area_i.sum(0)),
            label_area=self.label_area.add(label_i.sum(0)),
            all_inter=self.all_inter.add(all_inter),
            all_label_area=self.all_label_area.add(
                jnp.round(s_all.sum((0, 1))).astype(jnp.int32)),
            perm_inter=self.perm_inter.add(permuted),
            boot_inter=self.boot_inter.add(boot[0]), boot_unit=self.boot_unit.add(boot[1]),
            boot_label=self.boot_label.add(boot[2]))

    def merge(self, other: "PermutationTally") -> "PermutationTally":
        return self.replace(**{f: getattr(self, f).merge(getattr(other, f)) for f in (
            "inter", "unit_area", "label_area", "all_inter", "all_label_area", "perm_inter",
            "boot_inter", "boot_unit", "boot_label")})

    def _key(self, stream: int, at) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed), stream), at)

    def block_permutations(self, block: int, valid) -> jnp.ndarray:
        """``[P, block]``: the permutations drawn for block ``block`` whose slots
        ``valid`` ``[block]`` hold images (what ``update`` applies)."""
        return batch_permutations(self._key(0, block), jnp.asarray(valid, bool),
                                  self.permutations)

    # ------------------------------------------------------------------ results

    def iou(self) -> np.ndarray:
        """The tested labels' observed IoU ``[T]`` float64."""
        return _iou(self.inter.to_numpy(), self.unit_area.to_numpy(),
                    self.label_area.to_numpy())

    def all_iou(self) -> np.ndarray:
        """``[T, L]``: every label's observed IoU (column 0, "no label", is 0)."""
        iou = _iou(self.all_inter.to_numpy(), self.unit_area.to_numpy()[:, None],
                   self.all_label_area.to_numpy()[None])
        iou[:, 0] = 0
        return iou

    def best_iou(self) -> np.ndarray:
        """``[T]``: the observed maximum IoU over labels 1..L-1 (the statistic)."""
        return self.all_iou()[:, 1:].max(axis=1)

    def null_iou(self) -> np.ndarray:
        """``[P, T]``: each permutation's maximum IoU over the candidate labels (the
        null distribution of the best label's IoU wherever it can reach the observed
        one; every label when the candidates are all labels)."""
        perm = self.perm_inter.to_numpy()
        area = self.unit_area.to_numpy()
        label = self.all_label_area.to_numpy()[np.asarray(self.candidates)]  # [T, K]
        out = np.empty(perm.shape[:2])
        for lo in range(0, perm.shape[1], 256):  # bounds the float64 copy
            sl = slice(lo, lo + 256)
            out[:, sl] = _iou(perm[:, sl], area[None, sl, None], label[None, sl]).max(axis=2)
        return out

    def p_values(self) -> np.ndarray:
        """``[T]``: ``(1 + #{M_pi >= M}) / (1 + P)``, ``M`` the best label's IoU."""
        exceed = np.sum(self.null_iou() >= self.best_iou()[None], axis=0)
        return (1.0 + exceed) / (1.0 + self.permutations)

    def bootstrap_iou(self) -> np.ndarray:
        """``[R, T]``: each bootstrap replicate's IoU of the tested label."""
        return _iou(self.boot_inter.to_numpy(), self.boot_unit.to_numpy(),
                    self.boot_label.to_numpy())

    def interval(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Percentile bootstrap interval ``(low [T], high [T])`` of the tested
        label's IoU (within [0, 1], like every replicate)."""
        if not 0 < level < 1:
            raise ValueError(f"interval level must be in (0, 1), got {level}")
        reps = self.bootstrap_iou()
        low, high = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2], axis=0)
        return low, high


def _iou(inter, unit_area, label_area) -> np.ndarray:
    union = unit_area + label_area - inter
    return np.divide(inter, union, out=np.zeros(np.broadcast_shapes(
        np.shape(inter), np.shape(union))), where=union > 0)


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


def candidate_labels(unit_area, label_area, best_iou) -> np.ndarray:
    """``[T, K]`` int32: per unit, the labels ``c >= 1`` whose IoU bound ``min(|A|,
    |S^c|) / max(|A|, |S^c|)`` reaches its best IoU (the only ones a permutation's
    maximum can reach it with), padded by repeating the first; ``unit_area`` ``[T]``,
    ``label_area`` ``[L]``, ``best_iou`` ``[T]``."""
    a = np.asarray(unit_area, np.float64)[:, None]
    s = np.asarray(label_area, np.float64)[None, 1:]
    big = np.maximum(a, s)
    bound = np.divide(np.minimum(a, s), big, out=np.zeros(np.broadcast_shapes(a.shape,
                      s.shape)), where=big > 0)
    # a relative margin: a label on the bound's edge is kept (ties count)
    reach = bound >= np.asarray(best_iou, np.float64)[:, None] * (1 - 1e-9)
    rows = [1 + np.flatnonzero(r) for r in reach]
    rows = [r if len(r) else np.arange(1, s.shape[1] + 1) for r in rows]
    k = max(len(r) for r in rows)
    return np.stack([np.concatenate([r, np.repeat(r[:1], k - len(r))]) for r in rows]
                    ).astype(np.int32)


def _chunked_counts(acts, s_all, valid, units, labels, thresholds, candidates, onehot):
    """Per-image counts ``[b, T]`` of the tested labels (intersection, unit area,
    label area), every label's intersection ``[T, L]`` and the permutations'
    intersections with the candidate labels ``[P, T, K]``, in chunks of ``CHUNK``
    tested units. ``acts`` ``[b, q, units]``, ``s_all`` ``[b, q, L]`` 0/1,
    ``candidates`` ``[T, K]``, ``onehot`` ``[P, nb, block, block]``."""
    t = units.shape[0]
    chunks = -(-t // CHUNK)
    pad = chunks * CHUNK - t

    def padded(x, fill):
        return jnp.concatenate([x, jnp.full((pad,) + x.shape[1:], fill, x.dtype)]
                               ).reshape((chunks, CHUNK) + x.shape[1:])

    b, q, _ = acts.shape
    nb, bl = onehot.shape[1], onehot.shape[2]
    slots = jnp.arange(bl)
    s_blocks = s_all.reshape(nb, bl, q, -1)

    def one(args):
        u, c, th, cand = args  # [CHUNK] each, cand [CHUNK, K]
        a = (acts[:, :, u] > th[None, None, :]) & valid[:, None, None]
        a = a.astype(jnp.float32)
        # pair[k, i, j, u, c] = |A_i ∧ S_j^c| for images i, j of block k (0/1 products)
        pair = jnp.einsum("kiqu,kjqc->kijuc", a.reshape(nb, bl, q, -1), s_blocks)
        own = pair[:, slots, slots].reshape(b, CHUNK, -1)  # [b, C, L]: i paired with i
        read = jnp.take_along_axis(pair, cand[None, None, None], axis=4)  # [.., C, K]
        permuted = jnp.einsum("pkij,kijuc->puc", onehot, read,
                              precision=jax.lax.Precision.HIGHEST)
        inter = jnp.take_along_axis(own, c[None, :, None], axis=2)[..., 0]
        label = jnp.take(s_all, c, axis=2).sum(1)
        return (jnp.round(inter).astype(jnp.int32), a.sum(1).astype(jnp.int32),
                jnp.round(label).astype(jnp.int32),
                jnp.round(own.sum(0)).astype(jnp.int32),
                jnp.round(permuted).astype(jnp.int32))

    # padding tests unit 0 at an infinite threshold (never fires: intersections 0)
    inter, area, label, own, permuted = jax.lax.map(
        one, (padded(units, 0), padded(labels, 1), padded(thresholds, np.inf),
              padded(candidates, 1)))

    def flat(x):  # [chunks, n, CHUNK] -> [n, T]
        return jnp.moveaxis(x, 0, 1).reshape(x.shape[1], -1)[:, :t]

    own = own.reshape(chunks * CHUNK, -1)[:t]
    permuted = jnp.moveaxis(permuted, 0, 1).reshape(permuted.shape[1], chunks * CHUNK, -1)
    return flat(inter), flat(area), flat(label), own, permuted[:, :t]
