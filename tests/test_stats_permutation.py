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
    """The tally over ``acts``/``seg`` in padded batches of ``batch`` (sharded over
    ``n_devices``); returns the merged statistic."""
    step = devices.sharded_tally(lambda s, b: s.update(b["a"], b["s"], b["valid"], b["index"]),
                                 stat, jax.local_devices()[:n_devices])
    padded = devices.padded_size(batch, n_devices)
    state = step.init(stat)
    for i in range(0, len(acts), batch):
        data = {"a": acts[i:i + batch], "s": seg[i:i + batch],
                "index": np.arange(i, min(i + batch, len(acts)), dtype=np.int32)}
        data, valid = devices.pad_batch(data, padded)
        data["valid"] = valid
        state = step(state, data)
    return step.result(state)


def blocks(n, batch, n_devices):
    """``(indices, valid)`` of every block a permutation acts on (a device's shard)."""
    padded = devices.padded_size(batch, n_devices)
    shard = padded // n_devices
    for i in range(0, n, batch):
        idx = np.arange(i, min(i + batch, n))
        valid = np.arange(padded) < len(idx)
        idx = np.concatenate([idx, np.repeat(idx[-1:], padded - len(idx))])
        for d in range(n_devices):
            yield idx[d * shard:(d + 1) * shard], valid[d * shard:(d + 1) * shard]


def numpy_oracle(stat, acts, seg, units, labels, thresholds, batch, n_devices):
    """Slow loops: observed counts, each permutation's intersection, each bootstrap
    replicate's counts, with the permutations and weights the statistic draws."""
    T, P, R = len(units), stat.permutations, stat.replicates
    masks_a = [acts[..., u] > t for u, t in zip(units, thresholds)]  # [n, h, w] each
    masks_s = [np.any(seg == c, axis=1) for c in labels]
    inter, area, lab = np.zeros(T, int), np.zeros(T, int), np.zeros(T, int)
    perm_inter = np.zeros((P, T), int)
    boot = np.zeros((3, R, T), int)
    for idx, valid in blocks(len(acts), batch, n_devices):
        perm = np.asarray(batch_permutations(stat._key(0, int(idx[0])), valid, P))
        w = np.asarray(bootstrap_weights(stat._key(1, 0), idx, valid, R))
        for t in range(T):
            for i in range(len(idx)):
                if not valid[i]:
                    continue
                a, s = masks_a[t][idx[i]], masks_s[t][idx[i]]
                counts = [np.sum(a & s), np.sum(a), np.sum(s)]
                inter[t] += counts[0]
                area[t] += counts[1]
                lab[t] += counts[2]
                for k in range(3):
                    boot[k, :, t] += w[:, i] * counts[k]
                for p in range(P):
                    perm_inter[p, t] += np.sum(a & masks_s[t][idx[perm[p, i]]])
    return inter, area, lab, perm_inter, boot


@pytest.mark.slow
@pytest.mark.parametrize("batch,n_devices", [(8, 1), (8, 4)])
def test_counts_and_p_values_equal_a_slow_numpy_loop(batch, n_devices):
    acts, seg = make_data()
    units, labels = np.array([0, 1, 3, 0]), np.array([2, 2, 5, 4])
    thresholds = np.array([0.9, 0.8, 0.7, 1.0], np.float32)
    empty = PermutationTally.empty(units, labels, thresholds, permutations=60,
                                   replicates=30, seed=3)
    stat = run(empty, acts, seg, batch, n_devices)
    inter, area, lab, perm_inter, boot = numpy_oracle(empty, acts, seg, units, labels,
                                                      thresholds, batch, n_devices)
    assert np.array_equal(stat.inter.to_numpy(), inter)
    assert np.array_equal(stat.unit_area.to_numpy(), area)
    assert np.array_equal(stat.label_area.to_numpy(), lab)
    assert np.array_equal(stat.perm_inter.to_numpy(), perm_inter)
    for k, field in enumerate(("boot_inter", "boot_unit", "boot_label")):
        assert np.array_equal(getattr(stat, field).to_numpy(), boot[k])
    expected_p = (1 + np.sum(perm_inter >= inter, axis=0)) / (1 + 60)
    assert np.array_equal(stat.p_values(), expected_p)
    assert np.allclose(stat.iou(), inter / (area + lab - inter))
    null = stat.null_iou()
    assert np.allclose(null, perm_inter / (area + lab - perm_inter))
    reps = boot[0] / (boot[1] + boot[2] - boot[0])
    low, high = stat.interval(0.9)
    assert np.allclose(low, np.quantile(reps, 0.05, axis=0))
    assert np.allclose(high, np.quantile(reps, 0.95, axis=0))
    assert stat.p_values()[0] < stat.p_values()[1]  # the planted preference shows


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
    stat = run(PermutationTally.empty([0, 1], [3, 3], [1.0, 1.0], permutations=1000,
                                      replicates=200, seed=0), acts, seg, 16)
    p = stat.p_values()
    assert p[0] < 0.001
    assert p[1] > 0.01
    low, high = stat.interval()
    iou = stat.iou()
    assert low[0] <= iou[0] <= high[0] and high[0] - low[0] < 0.2
    assert iou[0] > np.max(stat.null_iou()[:, 0])


@pytest.mark.slow
def test_null_is_calibrated_over_1000_noise_units():
    """Pure-noise units (independent of the segmentation, but sharing its spatial
    prior: both favour the image's top rows) tested against fixed labels."""
    rng = np.random.default_rng(7)
    n, h, units = 48, 12, 1000
    prior = np.linspace(1.0, 0.0, h)[None, :, None, None]
    acts = smooth_noise(rng, (n, h, h, units), 3) + 0.6 * prior
    seg = np.kron(rng.integers(0, 3, (n, 1, 4, 4)), np.ones((1, 1, 3, 3), int))
    seg = np.where(rng.random((n, 1, h, h)) < 0.5 * prior[..., 0][:, None], 3, seg)
    labels = rng.integers(1, 4, units)
    stat = run(PermutationTally.empty(np.arange(units), labels, np.full(units, 1.0),
                                      permutations=1000, replicates=10, seed=5),
               acts, seg.astype(np.int32), 16)
    p = stat.p_values()
    assert np.mean(p < 0.01) <= 0.015
    assert 0.05 <= np.mean(p < 0.1) <= 0.15  # not trivially conservative either


def test_bad_arguments():
    with pytest.raises(ValueError, match="as many"):
        PermutationTally.empty([0, 1], [1], [0.5, 0.5])
    with pytest.raises(ValueError, match="positive"):
        PermutationTally.empty([0], [1], [0.5], permutations=0)
    stat = PermutationTally.empty([0], [1], [0.5])
    with pytest.raises(ValueError, match="seg must be"):
        stat.update(np.zeros((2, 4, 4, 1), np.float32), np.zeros((2, 1, 3, 4), np.int32),
                    None, np.arange(2))
    with pytest.raises(ValueError, match="level"):
        stat.interval(1.5)
