"""Exact IoU tallies against NumPy on all the data at once."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.stats.iou import (
    IoUTally,
    best_by_category,
    best_labels,
    iou_from_counts,
    pairs_above,
)
from tests.support.netdissect_oracle import category_area
from tests.support.netdissect_oracle import iou as oracle_iou

L = 7  # labels 0..6; label 5 never appears


def data(seed=0, n=30, units=5):
    rng = np.random.default_rng(seed)
    acts = rng.integers(0, 6, (n, 4, 5, units)).astype(np.float32)
    seg = rng.choice([0, 1, 2, 3, 4, 6], size=(n, 2, 4, 5)).astype(np.int32)
    dup = rng.random((n, 4, 5)) < 0.3
    seg[:, 1][dup] = seg[:, 0][dup]  # both layers name the same label: counts once
    seg[:4, 1] = seg[:4, 0]
    thresholds = np.array([3.0, 5.0, 0.0, 2.5, -1.0], np.float32)  # unit 1 never above
    return acts, seg, thresholds


def numpy_iou(acts, seg, thresholds):
    a = acts > thresholds  # [n,h,w,u]
    inter = np.zeros((acts.shape[-1], L), np.int64)
    label_area = np.zeros(L, np.int64)
    for c in range(L):
        s = (seg == c).any(axis=1)  # [n,h,w]
        label_area[c] = s.sum()
        inter[:, c] = (a & s[..., None]).sum(axis=(0, 1, 2))
    unit_area = a.sum(axis=(0, 1, 2))
    union = unit_area[:, None] + label_area[None] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    iou[:, 0] = 0
    return inter, unit_area, label_area, iou


def run(acts, seg, thresholds, batch):
    chex.clear_trace_counter()  # one trace per batch shape, counted afresh per call

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(s, a, t, g, v):
        return s.update(a, t, g, v)

    stat = IoUTally.empty(acts.shape[-1], L)
    for i in range(0, len(acts), batch):
        a, g = acts[i:i + batch], seg[i:i + batch]
        valid = np.arange(batch) < len(a)
        pad = batch - len(a)
        a = np.concatenate([a, np.full((pad,) + a.shape[1:], 9.0, np.float32)])
        g = np.concatenate([g, np.ones((pad,) + g.shape[1:], np.int32)])
        stat = update(stat, jnp.asarray(a), jnp.asarray(thresholds), jnp.asarray(g),
                      jnp.asarray(valid))
    return stat


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_counts_and_iou_equal_numpy(batch):
    acts, seg, t = data()
    stat = run(acts, seg, t, batch)
    inter, unit_area, label_area, iou = numpy_iou(acts, seg, t)
    c = stat.counts()
    np.testing.assert_array_equal(c["inter"], inter)
    np.testing.assert_array_equal(c["unit_area"], unit_area)
    np.testing.assert_array_equal(c["label_area"], label_area)
    assert c["pixels"] == acts.size // acts.shape[-1]
    got = stat.compute()
    np.testing.assert_allclose(got, iou, rtol=0, atol=1e-15)
    assert not np.isnan(got).any()
    assert np.all(got[:, 5] == 0) and np.all(got[1] == 0)  # absent label, silent unit


@pytest.mark.slow
def test_merge_matches_one_tally():
    acts, seg, t = data(2)
    parts = [IoUTally.empty(5, L).update(jnp.asarray(acts[i:i + 10]), jnp.asarray(t),
                                         jnp.asarray(seg[i:i + 10])) for i in (0, 10, 20)]
    merged = parts[2].merge(parts[0]).merge(parts[1])
    whole = IoUTally.empty(5, L).update(jnp.asarray(acts), jnp.asarray(t), jnp.asarray(seg))
    for k, v in whole.counts().items():
        np.testing.assert_array_equal(merged.counts()[k], v)


def test_labelling_helpers():
    iou = np.array([[0.9, 0.1, 0.3, 0.3], [0.0, 0.0, 0.0, 0.0], [0.0, 0.05, 0.2, 0.01]])
    iou[:, 0] = 0
    best, best_iou = best_labels(iou)
    np.testing.assert_array_equal(best, [2, 1, 2])  # ties -> lowest label
    np.testing.assert_array_equal(best_iou, [0.3, 0.0, 0.2])
    assert pairs_above(iou, 0.04) == [(0, 2, 0.3), (0, 3, 0.3), (0, 1, 0.1), (2, 2, 0.2),
                                      (2, 1, 0.05)]
    cats = best_by_category(iou, ["", "object", "part", "object"])
    np.testing.assert_array_equal(cats["object"][0], [3, 1, 1])
    np.testing.assert_array_equal(cats["part"][1], [0.3, 0.0, 0.2])
    np.testing.assert_array_equal(iou_from_counts(np.zeros((2, 3)), [0, 0], [0, 0, 0]),
                                  np.zeros((2, 3)))


def test_too_many_pixels_per_step_is_refused():
    big = jax.ShapeDtypeStruct((65536, 128, 128, 2), jnp.float32)
    seg = jax.ShapeDtypeStruct((65536, 1, 128, 128), jnp.int32)
    with pytest.raises(ValueError, match="2\\*\\*30"):
        jax.eval_shape(lambda a, g: IoUTally.empty(2, 3).update(a, jnp.zeros(2), g), big, seg)
    with pytest.raises(ValueError, match="seg must be"):
        IoUTally.empty(2, 3).update(jnp.zeros((1, 4, 4, 2)), jnp.zeros(2),
                                    jnp.zeros((1, 1, 8, 8), jnp.int32))


def test_out_of_range_labels_are_ignored():
    acts = jnp.ones((1, 2, 2, 1))
    seg = jnp.array([[[[1, 99], [-1, 2]], [[1, 1], [-5, 7]]]], jnp.int32)  # [1, K=2, 2, 2]
    c = IoUTally.empty(1, 3).update(acts, jnp.zeros(1), seg).counts()
    np.testing.assert_array_equal(c["label_area"], [0, 2, 1])
    np.testing.assert_array_equal(c["inter"], [[0, 2, 1]])


CATEGORIES = (-1, 0, 0, 1, 1, 2, 2)  # label -> category; label 5 never appears


def category_data(seed=3, n=24, units=4):
    """Three layers: category 0 everywhere (with gaps), category 1 on a third of the
    images, category 2 as image-level labels (constant maps) on half of them."""
    rng = np.random.default_rng(seed)
    acts = rng.integers(0, 6, (n, 4, 5, units)).astype(np.float32)
    seg = np.zeros((n, 3, 4, 5), np.int32)
    seg[:, 0] = rng.choice([0, 1, 2], size=(n, 4, 5))
    seg[: n // 3, 1] = rng.choice([0, 3, 4], size=(n // 3, 4, 5))
    seg[::2, 2] = 6
    return acts, seg, np.array([3.0, 4.0, 5.0, 1.5], np.float32)


@pytest.mark.slow
def test_netdissect_rule_equals_numpy():
    acts, seg, t = category_data()
    stat = IoUTally.empty(acts.shape[-1], L, categories=CATEGORIES)
    update = jax.jit(lambda s, a, g, v: s.update(a, jnp.asarray(t), g, v))
    for i in range(0, len(acts), 5):
        a, g = acts[i:i + 5], seg[i:i + 5]
        pad = 5 - len(a)
        valid = np.arange(5) < len(a)
        a = np.concatenate([a, np.full((pad,) + a.shape[1:], 9.0, np.float32)])
        g = np.concatenate([g, np.full((pad,) + g.shape[1:], 3, np.int32)])
        stat = update(stat, a, g, valid)
    np.testing.assert_array_equal(stat.counts()["category_area"],
                                  category_area(acts, seg, t, CATEGORIES))
    want = oracle_iou(acts, seg, t, L, CATEGORIES)
    np.testing.assert_allclose(stat.compute(), want, rtol=0, atol=1e-15)
    pnas = oracle_iou(acts, seg, t, L)
    assert np.all(want >= pnas) and np.any(want[:, 3] > pnas[:, 3])  # the rules differ
    # merge keeps the category areas
    half = IoUTally.empty(acts.shape[-1], L, categories=CATEGORIES)
    parts = [half.update(jnp.asarray(acts[s]), jnp.asarray(t), jnp.asarray(seg[s]))
             for s in (slice(0, 10), slice(10, None))]
    np.testing.assert_array_equal(parts[0].merge(parts[1]).counts()["category_area"],
                                  stat.counts()["category_area"])


def test_bad_categories_are_refused():
    with pytest.raises(ValueError, match="categories must give 7"):
        IoUTally.empty(2, L, categories=(0, 1))
    with pytest.raises(ValueError, match="no label has a category"):
        IoUTally.empty(2, 2, categories=(-1, -1))
