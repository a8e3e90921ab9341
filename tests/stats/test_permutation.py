"""PermutationTally: image-permutation p-values and bootstrap intervals of IoUs,
against slow NumPy loops over the same draws; a planted unit; a calibrated null."""

import jax
import numpy as np
import pytest

from jaxdissect.runtime import devices
from jaxdissect.stats import permutation
from jaxdissect.stats.permutation import PermutationTally

# the draws, jitted (as inside the statistic's step)
batch_permutations = jax.jit(permutation.batch_permutations, static_argnums=2)
bootstrap_weights = jax.jit(permutation.bootstrap_weights, static_argnums=3)


def smooth_noise(rng, shape, cell):
    """Blocky noise ``[n, h, w, u]`` (cells of ``cell`` pixels) plus fine noise."""
    n, h, w, u = shape
    coarse = rng.random((n, h // cell, w // cell, u), dtype=np.float32)
    return np.repeat(np.repeat(coarse, cell, 1), cell, 2) + 0.3 * rng.random(shape, np.float32)


def make_data(n=21, h=8, w=8, units=5, labels=6, seed=0):
    rng = np.random.default_rng(seed)
    acts = smooth_noise(rng, (n, h, w, units), 2)
    seg = np.stack([np.kron(rng.integers(0, labels, (n, h // 2, w // 2)), np.ones((2, 2), int)),
                    rng.integers(0, labels, (n, h, w)) * (rng.random((n, h, w)) < 0.5)],
                   axis=1).astype(np.int32)
    acts[..., 0] += 0.8 * (seg[:, 0] == 2)  # unit 0 likes label 2
    return acts, seg


def run(stat, acts, seg, batch, n_devices=1):
    """The tally over ``acts``/``seg`` in padded batches of ``batch`` images (whole
    blocks, sharded over ``n_devices`` with whole blocks each); returns the merged
    statistic."""
    assert batch % (stat.block * n_devices) == 0
    step = devices.sharded_tally(lambda s, b: s.update(b["a"], b["s"], b["valid"], b["index"]),
                                 stat, jax.local_devices()[:n_devices])
    state = step.init(stat)
    for i in range(0, len(acts), batch):
        data = {"a": acts[i:i + batch], "s": seg[i:i + batch],
                "index": np.arange(i, min(i + batch, len(acts)), dtype=np.int32)}
        data, valid = devices.pad_batch(data, batch)
        data["valid"] = valid
        state = step(state, data)
    return step.result(state)


def global_permutations(stat, n):
    """``[P, n]``: each permutation of all ``n`` images that the statistic applies,
    assembled from its blocks' draws."""
    out = np.tile(np.arange(n), (stat.permutations, 1))
    for first in range(0, n, stat.block):
        idx = np.arange(first, min(first + stat.block, n))
        valid = np.arange(stat.block) < len(idx)
        perm = np.asarray(stat.block_permutations(first // stat.block, valid))
        out[:, idx] = first + perm[:, :len(idx)]
    return out


def numpy_oracle(stat, acts, seg, units, labels, thresholds, num_labels):
    """NumPy on all the data at once, one loop over the statistic's permutations:
    observed counts, every permutation's intersections with every label, the
    max-over-labels p-values and each bootstrap replicate's counts."""
    n = len(acts)
    a = np.stack([acts[..., u] > t for u, t in zip(units, thresholds)], -1)  # [n, h, w, T]
    s = np.stack([np.any(seg == c, axis=1) for c in range(num_labels)], -1)  # [n, h, w, L]
    a, s = a.reshape(n, -1, len(units)).astype(np.int64), s.reshape(n, -1, num_labels)
    s = s.astype(np.int64)
    all_inter = np.einsum("nqt,nqc->tc", a, s)
    area, label_area = a.sum((0, 1)), s.sum((0, 1))
    perms = global_permutations(stat, n)
    perm_inter = np.stack([np.einsum("nqt,nqc->tc", a, s[pi]) for pi in perms])

    def best(inter):  # max over labels 1.. of the IoU
        iou = inter / (area[:, None] + label_area[None] - inter)
        return iou[..., 1:].max(-1)

    observed = best(all_inter)
    null = np.stack([best(x) for x in perm_inter])
    p = (1 + np.sum(null >= observed, axis=0)) / (1 + stat.permutations)
    w = np.asarray(bootstrap_weights(stat._key(1, 0), np.arange(n), np.ones(n, bool),
                                     stat.replicates))  # [R, n]
    inter_i = np.einsum("nqt,nqt->nt", a, s[..., labels])
    boot = [w @ x for x in (inter_i, a.sum(1), s[..., labels].sum(1))]
    return all_inter, label_area, perm_inter, observed, null, p, boot


@pytest.mark.slow
@pytest.mark.parametrize("batch,n_devices", [(8, 1), (16, 1), (32, 4)])
def test_counts_and_p_values_equal_numpy_over_the_same_permutations(batch, n_devices):
    acts, seg = make_data()
    units, labels = np.array([0, 1, 3, 0]), np.array([2, 2, 5, 4])
    thresholds = np.array([0.9, 0.8, 0.7, 1.0], np.float32)
    empty = PermutationTally.empty(units, labels, thresholds, 6, permutations=60,
                                   replicates=30, seed=3, block=4 if n_devices == 1 else 8)
    stat = run(empty, acts, seg, batch, n_devices)
    all_inter, label_area, perm_inter, observed, null, p, boot = numpy_oracle(
        empty, acts, seg, units, labels, thresholds, 6)
    assert np.array_equal(stat.all_inter.to_numpy(), all_inter)
    assert np.array_equal(stat.all_label_area.to_numpy(), label_area)
    assert np.array_equal(stat.perm_inter.to_numpy(), perm_inter[..., 1:])  # labels 1..5
    assert np.array_equal(stat.inter.to_numpy(), all_inter[np.arange(4), labels])
    assert np.array_equal(stat.label_area.to_numpy(), label_area[labels])
    assert np.allclose(stat.best_iou(), observed)
    assert np.allclose(stat.null_iou(), null)
    assert np.array_equal(stat.p_values(), p)
    for k, field in enumerate(("boot_inter", "boot_unit", "boot_label")):
        assert np.array_equal(getattr(stat, field).to_numpy(), boot[k])
    reps = boot[0] / (boot[1] + boot[2] - boot[0])
    low, high = stat.interval(0.9)
    assert np.allclose(low, np.quantile(reps, 0.05, axis=0))
    assert np.allclose(high, np.quantile(reps, 0.95, axis=0))
    assert np.all((0 <= low) & (low <= high) & (high <= 1))
    assert stat.p_values()[0] < stat.p_values()[1]  # the planted preference shows


def test_reading_only_labels_that_can_reach_the_best_gives_the_same_p_values():
    """A label whose IoU bound min(|A|, |S|) / max(|A|, |S|) is below the unit's best
    IoU never decides a permutation's exceedance: the candidates' p-values equal
    every label's, on the same permutations."""
    rng = np.random.default_rng(4)
    acts = smooth_noise(rng, (24, 8, 8, 5), 2)
    # labels 1..8 from common to rare
    p = np.array([0.3, 0.25, 0.2, 0.1, 0.07, 0.04, 0.02, 0.02])
    seg = np.kron(rng.choice(np.arange(1, 9), (24, 1, 4, 4), p=p), np.ones((1, 1, 2, 2), int))
    seg = seg.astype(np.int32)
    acts[..., 0] += 0.8 * (seg[:, 0] == 1)
    units, thresholds = np.arange(5), np.full(5, 1.0, np.float32)
    every = run(PermutationTally.empty(units, np.ones(5), thresholds, 9, permutations=80,
                                       replicates=5, seed=2, block=4), acts, seg, 8)
    cand = permutation.candidate_labels(every.unit_area.to_numpy(),
                                        every.all_label_area.to_numpy(), every.best_iou())
    assert len(set(cand[0])) == 1 and cand.shape[1] <= 8   # the planted unit: 1 label
    some = run(PermutationTally.empty(units, np.ones(5), thresholds, 9, permutations=80,
                                      replicates=5, seed=2, block=4, candidates=cand),
               acts, seg, 8)
    assert np.array_equal(some.p_values(), every.p_values())
    best = 1 + np.argmax(every.all_iou()[:, 1:], axis=1)
    assert all(b in row for b, row in zip(best, cand))


@pytest.mark.slow
def test_p_values_do_not_depend_on_batches_or_devices():
    acts, seg = make_data(n=37)
    empty = PermutationTally.empty([0, 1, 2], [2, 1, 3], [0.9, 0.8, 0.7], 6,
                                   permutations=50, replicates=20, seed=1, block=4)
    runs = [run(empty, acts, seg, b, d) for b, d in ((8, 1), (16, 1), (32, 1), (16, 4))]
    for other in runs[1:]:
        assert np.array_equal(other.p_values(), runs[0].p_values())
        assert np.array_equal(other.perm_inter.to_numpy(), runs[0].perm_inter.to_numpy())
        assert np.array_equal(other.bootstrap_iou(), runs[0].bootstrap_iou())


def test_permutations_are_permutations_of_the_valid_images():
    valid = np.array([True] * 5 + [False] * 3)
    perm = np.asarray(batch_permutations(jax.random.key(0), valid, 2000))
    assert np.all(np.sort(perm[:, :5], axis=1) == np.arange(5))
    assert np.all(perm[:, 5:] == np.arange(5, 8))
    # uniform: each image lands in each valid slot about 1/5 of the time
    freq = np.mean(perm[:, :5, None] == np.arange(5), axis=0)
    assert np.all(np.abs(freq - 0.2) < 0.04)
    # padding anywhere (not only at the end) is never paired with a valid image
    valid = np.array([False, True, True, False, True, True])
    perm = np.asarray(batch_permutations(jax.random.key(1), valid, 500))
    assert np.all(valid[perm] == valid[None, :])


def test_bootstrap_weights_depend_on_the_image_not_the_batch():
    key = jax.random.key(4)
    whole = np.asarray(bootstrap_weights(key, np.arange(10), np.ones(10, bool), 50))
    part = np.asarray(bootstrap_weights(key, np.arange(6, 10), np.array([1, 1, 0, 1], bool), 50))
    assert np.array_equal(part[:, [0, 1, 3]], whole[:, [6, 7, 9]])
    assert np.all(part[:, 2] == 0)
    big = np.asarray(bootstrap_weights(key, np.arange(400), np.ones(400, bool), 200))
    assert abs(big.mean() - 1) < 0.02 and abs(big.var() - 1) < 0.05


def test_planted_unit_is_significant():
    rng = np.random.default_rng(1)
    n, h = 64, 16
    seg = np.kron(rng.integers(0, 4, (n, 1, 4, 4)), np.ones((1, 1, 4, 4), int)).astype(np.int32)
    acts = smooth_noise(rng, (n, h, h, 2), 4)
    acts[..., 0] += 0.7 * (seg[:, 0] == 3)  # unit 0 planted on label 3; unit 1 noise
    stat = run(PermutationTally.empty([0, 1], [3, 3], [1.0, 1.0], 4, permutations=1000,
                                      replicates=200, seed=0), acts, seg, 16)
    p = stat.p_values()
    assert p[0] < 0.001
    assert p[1] > 0.01
    low, high = stat.interval()
    iou = stat.iou()
    assert low[0] <= iou[0] <= high[0] and high[0] - low[0] < 0.2
    assert iou[0] == stat.best_iou()[0] and iou[0] > np.max(stat.null_iou()[:, 0])


@pytest.mark.slow
def test_null_is_calibrated_over_1000_noise_units():
    """Pure-noise units (independent of the segmentation; favouring the image's top
    rows), each tested for its best of 6 exchangeable labels."""
    rng = np.random.default_rng(7)
    n, h, units = 48, 12, 1000
    prior = np.linspace(1.0, 0.0, h)[None, :, None, None]
    acts = smooth_noise(rng, (n, h, h, units), 3) + 0.6 * prior
    seg = np.kron(rng.integers(1, 7, (n, 1, 4, 4)), np.ones((1, 1, 3, 3), int))
    stat = run(PermutationTally.empty(np.arange(units), np.ones(units), np.full(units, 1.2),
                                      7, permutations=1000, replicates=10, seed=5),
               acts, seg.astype(np.int32), 16)
    p = stat.p_values()
    assert np.mean(p < 0.01) <= 0.015
    assert 0.05 <= np.mean(p < 0.1) <= 0.15  # not trivially conservative either
    # testing the best label as if it had been chosen in advance is not calibrated
    best = 1 + np.argmax(stat.all_iou()[:, 1:], axis=1)
    area, label = stat.unit_area.to_numpy(), stat.all_label_area.to_numpy()
    perm = stat.perm_inter.to_numpy()[:, np.arange(units), best - 1]  # columns: labels 1..
    null = perm / (area + label[best] - perm)
    naive = (1 + np.sum(null >= stat.best_iou(), axis=0)) / 1001
    assert np.mean(naive < 0.01) > 3 * max(np.mean(p < 0.01), 0.01)


def test_bad_arguments():
    with pytest.raises(ValueError, match="as many"):
        PermutationTally.empty([0, 1], [1], [0.5, 0.5], 3)
    with pytest.raises(ValueError, match="positive"):
        PermutationTally.empty([0], [1], [0.5], 3, permutations=0)
    with pytest.raises(ValueError, match="labels must be in 1..2"):
        PermutationTally.empty([0], [3], [0.5], 3)
    with pytest.raises(ValueError, match="candidates must be"):
        PermutationTally.empty([0], [1], [0.5], 3, candidates=[[0, 1]])
    stat = PermutationTally.empty([0], [1], [0.5], 3, block=2)
    with pytest.raises(ValueError, match="seg must be"):
        stat.update(np.zeros((2, 4, 4, 1), np.float32), np.zeros((2, 1, 3, 4), np.int32),
                    None, np.arange(2))
    with pytest.raises(ValueError, match="whole blocks of 2"):
        stat.update(np.zeros((3, 4, 4, 1), np.float32), np.zeros((3, 1, 4, 4), np.int32),
                    None, np.arange(3))
    with pytest.raises(ValueError, match="level"):
        stat.interval(1.5)
