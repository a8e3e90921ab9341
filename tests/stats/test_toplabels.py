"""One-pass thresholds + IoU (TopLabels) and its selection kernels, against NumPy
on all the data at once."""

import functools
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.stats import native, select
from jaxdissect.stats.quantile import rank_for_level
from jaxdissect.stats.toplabels import TopLabels, budget_for
from tests.stats.test_iou import CATEGORIES, category_data
from tests.support.netdissect_oracle import category_area
from tests.support.netdissect_oracle import iou as oracle_iou

L = 7  # labels 0..6; label 5 never appears


def data(seed=0, n=30, units=5, ties=True):
    rng = np.random.default_rng(seed)
    if ties:
        acts = rng.integers(0, 6, (n, 4, 5, units)).astype(np.float32)
    else:
        acts = rng.normal(size=(n, 4, 5, units)).astype(np.float32)
    acts[..., 0] = 2.0  # a constant unit
    seg = rng.choice([0, 1, 2, 3, 4, 6], size=(n, 2, 4, 5)).astype(np.int32)
    dup = rng.random((n, 4, 5)) < 0.3
    seg[:, 1][dup] = seg[:, 0][dup]  # both layers name the same label: counts once
    return acts, seg


def numpy_oracle(acts, seg, q):
    flat = acts.reshape(-1, acts.shape[-1])
    k = rank_for_level(q, len(flat))
    t = -np.sort(-flat, axis=0)[k - 1]
    a = acts > t
    inter = np.zeros((acts.shape[-1], L), np.int64)
    area = np.zeros(L, np.int64)
    for c in range(L):
        s = (seg == c).any(axis=1)
        area[c] = s.sum()
        inter[:, c] = (a & s[..., None]).sum(axis=(0, 1, 2))
    return t, inter, a.sum(axis=(0, 1, 2)), area


def run(acts, seg, budget, batch):
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(s, a, g, v):
        return s.update(a, g, v)

    stat = TopLabels.empty(acts.shape[-1], budget, L, seg.shape[1])
    for i in range(0, len(acts), batch):
        a, g = acts[i:i + batch], seg[i:i + batch]
        pad = batch - len(a)
        valid = np.arange(batch) < len(a)
        a = np.concatenate([a, np.full((pad,) + a.shape[1:], 99.0, np.float32)])
        g = np.concatenate([g, np.ones((pad,) + g.shape[1:], np.int32)])
        stat = update(stat, a, g, valid)
    return stat


@pytest.mark.parametrize("batch", [1, 7, 64])
@pytest.mark.parametrize("ties", [True, False])
def test_thresholds_and_counts_equal_numpy(batch, ties):
    acts, seg = data(ties=ties)
    q = 0.05
    budget = budget_for(q, acts[..., 0].size, multiple=8)
    stat = run(acts, seg, budget, batch)
    t_np, inter, unit_area, area = numpy_oracle(acts, seg, q)
    t = stat.thresholds(q)
    np.testing.assert_array_equal(t, t_np)
    c = stat.counts(t)
    np.testing.assert_array_equal(c["inter"], inter)
    np.testing.assert_array_equal(c["unit_area"], unit_area)
    np.testing.assert_array_equal(c["label_area"], area)
    assert int(c["pixels"]) == acts[..., 0].size
    iou = stat.iou(t)
    assert np.all(iou[:, 5] == 0) and np.all(iou[:, 0] == 0) and not np.isnan(iou).any()
    assert np.all(c["unit_area"][0] == 0)  # the constant unit is never above its level


def test_merge_equals_one_stream():
    acts, seg = data(seed=3, ties=False)
    a = run(acts[:11], seg[:11], 64, 4)
    b = run(acts[11:], seg[11:], 64, 4)
    whole = run(acts, seg, 64, 4)
    merged = a.merge(b)
    for q in (0.05, 0.1):
        t = whole.thresholds(q)
        np.testing.assert_array_equal(merged.thresholds(q), t)
        for key, v in whole.counts(t).items():
            np.testing.assert_array_equal(merged.counts(t)[key], v)


def test_budget_too_small_is_a_clear_error():
    acts, seg = data()
    stat = run(acts, seg, 8, 10)
    with pytest.raises(ValueError, match="budget"):
        stat.thresholds(0.5)
    with pytest.raises(ValueError, match="seg must be"):
        stat.update(jnp.asarray(acts[:2]), jnp.asarray(seg[:3]))


def kernels():
    """Every top-B kernel: NumPy host, lax.top_k, and the native one when it builds."""
    out = [select.host_merge, select.xla_merge]
    target = native.target("top_merge")
    if target is not None:
        out.append(jax.jit(functools.partial(select.native_merge, target)))
    return out


@pytest.mark.slow
def test_native_kernel_builds_where_a_compiler_exists(tmp_path, monkeypatch):
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler: the NumPy host kernel is used")
    assert native.target("top_merge") == native.KERNELS["top_merge"][0]
    monkeypatch.setenv("JAXDISSECT_CACHE", str(tmp_path))
    path = native.library_path()
    native.build(path)  # a fresh build into an empty cache directory
    assert path.exists() and [p.name for p in path.parent.iterdir()] == [path.name]


def test_unbuildable_native_kernel_falls_back_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(native, "library_path", lambda: tmp_path / "cache" / "k.so")
    with pytest.warns(RuntimeWarning, match="NumPy host kernel"):
        assert native.target("top_merge") is None
    assert native.target("radix_histogram") is None


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("n,steps", [(3, 4), (40, 5), (1000, 3)])
def test_selection_kernels_agree_with_numpy(ties, n, steps):
    """Both kernels keep each unit's B largest as a multiset, and ``src`` points
    at where each kept value came from."""
    rng = np.random.default_rng(n)
    units, budget = 6, 32
    top = np.full((units, budget), -np.inf, np.float32)
    seen = [np.full((budget, units), -np.inf, np.float32)]
    for _ in range(steps):
        new = (rng.integers(0, 4, (n, units)) if ties else rng.gamma(1, 1, (n, units)))
        new = new.astype(np.float32)
        new[: n // 3, 1] = -np.inf  # padding values never enter
        both = np.concatenate([top, new.T], axis=1)
        for kernel in kernels():
            v, src = map(np.asarray, kernel(top, new))
            np.testing.assert_array_equal(np.take_along_axis(both, src, 1), v)
            assert all(len(set(r)) == budget for r in src)
            expect = np.sort(both, axis=1)[:, -budget:]
            np.testing.assert_array_equal(np.sort(v, axis=1), expect)
        top = np.asarray(select.merge_top(jnp.asarray(top), jnp.asarray(new))[0])
        seen.append(new)
    np.testing.assert_array_equal(np.sort(top, 1),
                                  np.sort(np.concatenate(seen).T, 1)[:, -budget:])


def test_floor_estimate_that_fails_its_count_is_dropped():
    """A batch whose every-8th-pixel sample overstates the level (all large values
    on sampled pixels) still gives the exact top-B."""
    units, budget, n = 2, 16, 800
    new = np.zeros((n, units), np.float32)
    new[::8] = 10.0 + np.arange(n // 8)[:, None]  # 100 large values, all sampled
    new[1::8, 0] = 5.0
    for kernel in kernels():
        v, _ = kernel(np.full((units, budget), -np.inf, np.float32), new)
        np.testing.assert_array_equal(np.sort(np.asarray(v), 1), np.sort(new.T, 1)[:, -budget:])


@pytest.mark.parametrize("positives", [0.01, 0.0])
def test_floor_estimate_on_ties_is_completed_by_equal_values(positives):
    """Mostly zeros (a ReLU's output) and fewer positives than B: the estimated floor
    is 0, fewer than B values exceed it, and zeros complete the top B."""
    rng = np.random.default_rng(3)
    units, budget, n = 5, 64, 4000
    new = np.where(rng.random((n, units)) < positives, rng.random((n, units)) + 0.5,
                   0.0).astype(np.float32)
    new[: n // 4, 2] = -np.inf  # padding rows
    top = np.full((units, budget), -np.inf, np.float32)
    both = np.concatenate([top, new.T], axis=1)
    for kernel in kernels():
        v, src = map(np.asarray, kernel(top, new))
        np.testing.assert_array_equal(np.take_along_axis(both, src, 1), v)
        assert all(len(set(r)) == budget for r in src)
        np.testing.assert_array_equal(np.sort(v, 1), np.sort(both, 1)[:, -budget:])


def test_merge_top_composes_with_vmap_and_jit():
    rng = np.random.default_rng(5)
    tops = np.full((3, 4, 8), -np.inf, np.float32)
    news = rng.normal(size=(3, 50, 4)).astype(np.float32)
    values, src = jax.jit(jax.vmap(select.merge_top))(jnp.asarray(tops), jnp.asarray(news))
    for i in range(3):
        np.testing.assert_array_equal(np.sort(np.asarray(values[i]), 1),
                                      np.sort(news[i].T, 1)[:, -8:])
        both = np.concatenate([tops[i], news[i].T], 1)
        np.testing.assert_array_equal(np.take_along_axis(both, np.asarray(src[i]), 1),
                                      np.asarray(values[i]))


@pytest.mark.slow
def test_netdissect_rule_equals_numpy():
    """Category areas from the buffer's image indices, merged across buffers,
    against NetDissect's per-image tally loop."""
    acts, seg, _ = category_data()
    q = 0.1
    n = acts[..., 0].size
    budget = budget_for(q, n, multiple=8)
    halves = []
    for s in (slice(0, 9), slice(9, None)):
        stat = TopLabels.empty(acts.shape[-1], budget, L, seg.shape[1], track_images=True)
        for i in range(s.start, s.stop or len(acts), 4):
            j = min(i + 4, s.stop or len(acts))
            stat = stat.update(jnp.asarray(acts[i:j]), jnp.asarray(seg[i:j]),
                               index=jnp.arange(i, j, dtype=jnp.int32))
        halves.append(stat)
    stat = halves[1].merge(halves[0])
    t = stat.thresholds(q)
    np.testing.assert_array_equal(stat.counts(t, CATEGORIES)["category_area"],
                                  category_area(acts, seg, t, CATEGORIES))
    np.testing.assert_allclose(stat.iou(t, CATEGORIES), oracle_iou(acts, seg, t, L, CATEGORIES),
                               rtol=0, atol=1e-15)
    np.testing.assert_allclose(stat.iou(t), oracle_iou(acts, seg, t, L), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="track_images"):
        TopLabels.empty(2, 8, L, 1).counts(np.zeros(2, np.float32), CATEGORIES)
    with pytest.raises(ValueError, match="pass index"):
        TopLabels.empty(2, 8, L, 1, track_images=True).update(
            jnp.zeros((1, 2, 2, 2)), jnp.zeros((1, 1, 2, 2), jnp.int32))
