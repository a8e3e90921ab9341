"""Generator interventions against the reference's algorithm run in PyTorch: one full
generator forward per edit, segment, count pixels, loop over samples and locations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import torch

from jaxdissect.experiments import intervene
from jaxdissect.experiments.significance import poisson_weights
from tests.support.tiny_nets import (
    SEG_LABELS,
    ArraySource,
    TinyGenerator,
    TinySegmenter,
    generator_spec,
    torch_generator,
    torch_segment,
)

UNITS, L = 8, len(SEG_LABELS)
N = 12
# one flipped pixel of a 16x16 image in one sample: float32 jax vs torch may disagree
# on a pixel lying exactly at a segmenter threshold
PIX = 1.0 / 256 / N * 1.01


@pytest.fixture(scope="module")
def setup():
    model = TinyGenerator(units=UNITS)
    params = model.init(jax.random.PRNGKey(3), jnp.zeros((1, 6)))["params"]
    z = np.random.default_rng(5).standard_normal((N, 6)).astype(np.float32)
    split = intervene.split_generator(generator_spec(params, model), "layer2")
    return params, ArraySource(z=z), split


def torch_shares(imgs):
    seg = torch_segment(imgs)
    pres = (seg[..., None] == torch.arange(L)).any(1)  # [b,H,W,L]
    return pres.double().mean((1, 2)).numpy()


@pytest.mark.slow
def test_per_unit_and_removal_match_torch(setup, tmp_path):
    params, src, split = setup
    g = torch_generator(params)
    z = src.arrays["z"]
    with torch.no_grad():
        base = torch_shares(g(z))

        def zeroed(units):
            def f(h):
                h = h.clone()
                h[:, list(units)] = 0
                return h
            return torch_shares(g(z, f)) - base

        iou = np.random.default_rng(0).random((UNITS, L))
        order = np.argsort(-iou[:, 2], kind="stable")
        significant = np.zeros(UNITS, np.int64)
        significant[order[1]] = 2           # the second best unit's label is significant
        res = intervene.run_experiment(split, TinySegmenter(), src, iou, SEG_LABELS,
                                       np.ones(UNITS), remove_concepts=(2,), max_remove=5,
                                       batch_size=5, chunk=3, progress=False,
                                       significant_labels=significant, replicates=300)
        np.testing.assert_allclose(res.baseline_share, base.mean(0), atol=PIX)
        want = np.stack([zeroed([u]).mean(0) for u in range(UNITS)])
        np.testing.assert_allclose(res.unit_ablation_delta, want, atol=2 * PIX)
        assert res.unit_ablation_samples == N
        curve = res.removal["green"].to_json()
        assert curve["units"] == order[:5].tolist() and curve["samples"] == N
        assert curve["significant"] == [False, True, False, False, False]
        b = base[:, 2].mean()
        # the bootstrap: samples resampled by the Poisson weights of their index
        w = np.asarray(poisson_weights(np.arange(N), 300)).astype(np.float64)   # [N, B]
        lows = []
        for n in range(6):
            d = zeroed(order[:n])[:, 2]
            removed = -d.mean() / b
            assert curve["removed_fraction"][n] == pytest.approx(removed, abs=4 * PIX / b)
            assert curve["remaining_share"][n] == pytest.approx(1 - removed, abs=4 * PIX / b)
            reps = np.minimum(-(w.T @ d) / (w.T @ base[:, 2]), 1.0)
            lo, hi = np.quantile(reps, [0.005, 0.995])
            assert curve["ci99_low"][n] == pytest.approx(lo, abs=8 * PIX / b)
            assert curve["ci99_high"][n] == pytest.approx(hi, abs=8 * PIX / b)
            assert curve["ci99_high"][n] <= 1.0
            lows.append(lo)
        b_lo, b_hi = curve["baseline_share_ci99"]
        want = np.quantile(w.T @ base[:, 2] / w.sum(0), [0.005, 0.995])
        assert (b_lo, b_hi) == pytest.approx(tuple(want), abs=PIX)
        # the finding: a set size fixed in advance, its 99% interval
        r = np.asarray(curve["removed_fraction"])
        for at, n in ((3, 3), (20, 5)):      # 20 units asked, 5 measured: the largest
            f = res.removal["green"].finding(min_removed=0.1, at=at)
            assert f.applies and f.bounds == (-np.inf, 1.0) and f.in_bounds()
            assert f.estimate == pytest.approx(r[n])
            assert f.low == pytest.approx(lows[n], abs=8 * PIX / b)
            assert f.holds == (f.low >= 0.1) and f.samples == N
            assert f"Zeroing the {n} best-IoU units of <b>green</b> (1 of them" in f.text
        # only the best unit removed: its label is not significant, nothing to test
        f = res.removal["green"].finding(min_removed=0.1, at=1)
        assert not f.applies and not f.holds and "none of the 1 units" in f.reason
        back = intervene.InterventionResult.load(res.save(str(tmp_path / "i.npz")))
        assert back.to_json() == res.to_json()
        assert isinstance(back.removal["green"], intervene.RemovalCurve)


@pytest.mark.slow
def test_insertion_by_context_matches_torch_loop(setup, monkeypatch):
    params, src, split = setup
    g = torch_generator(params)
    z = src.arrays["z"]
    units, values, concept = np.array([1, 4, 6]), np.array([3.0, 2.5, 4.0]), 3
    sums = intervene.insertion_by_context(split, TinySegmenter(), src, units, values,
                                          concept, L, batch_size=5, chunk=7, progress=False)
    # the reference's generator-context loop
    ctx_sum, ctx_n = np.zeros(L), np.zeros(L)
    per_sum, per_n = np.zeros((N, L)), np.zeros((N, L))   # per sample, for the bootstrap
    with torch.no_grad():
        img = g(z)
        seg = torch_segment(img)
        base = torch_shares(img)[:, concept]
        for y in range(8):
            for x in range(8):
                def put(h, y=y, x=x):
                    h = h.clone()
                    h[:, list(units), y, x] = torch.tensor(values, dtype=h.dtype)[None]
                    return h
                d = torch_shares(g(z, put))[:, concept] - base
                sel = seg[:, :, y * 2 + 1, x * 2 + 1]  # centre of the 2x2 cell on 16x16
                for b in range(N):
                    for c in torch.unique(sel[b]).tolist():
                        if c:
                            ctx_sum[c] += d[b]
                            ctx_n[c] += 1
                            per_sum[b, c] += d[b]
                            per_n[b, c] += 1
    got_n = sums["ctx_n"].sum(0)
    np.testing.assert_array_equal(got_n, ctx_n)
    np.testing.assert_allclose(sums["ctx_sum"].sum(0), ctx_sum, atol=64 * N * PIX)
    summary = intervene.summarize_insertion(sums, SEG_LABELS, min_count=1, units=units,
                                            significant=np.ones(UNITS, bool))
    for row in summary.contexts():
        c = row["label"]
        assert row["count"] == ctx_n[c]
        assert row["mean_added"] == pytest.approx(ctx_sum[c] / ctx_n[c], abs=64 * N * PIX)
    assert summary.per_location_mean_added.shape == (8, 8) and summary.samples == N
    # the bootstrap: each sample's edits resampled together, Poisson weights of its index
    w = np.asarray(poisson_weights(np.arange(N), 1000))                   # [N, B]
    np.testing.assert_array_equal(sums["boot_n"], w.T @ per_n)
    np.testing.assert_allclose(sums["boot_sum"], w.T @ per_sum, atol=64 * N * 8 * PIX)
    # the paper-context finding on two groups of these labels, against NumPy
    hi_names, lo_names = ("blue", "bright"), ("red", "dark")
    intervene.PAPER_CONTEXTS["test-concept"] = (hi_names, lo_names)
    try:
        summary = intervene.summarize_insertion(sums, SEG_LABELS, min_count=1, units=units,
                                                concept="test-concept",
                                                significant=np.ones(UNITS, bool))
        monkeypatch.setattr(intervene, "MIN_EDITS", 1)
        f = summary.context_finding(min_ratio=2.0)
        # with too few edits in a group, or no significant unit, it does not apply
        monkeypatch.setattr(intervene, "MIN_EDITS", 10 ** 6)
        short = summary.context_finding(min_ratio=2.0)
        unsupported = intervene.summarize_insertion(
            sums, SEG_LABELS, min_count=1, units=units, concept="test-concept",
            significant=np.zeros(UNITS, bool)).context_finding(min_ratio=2.0)
        monkeypatch.setattr(intervene, "MIN_EDITS", 1)
    finally:
        del intervene.PAPER_CONTEXTS["test-concept"]
    assert not short.applies and "fewer than 1000000" in short.reason
    assert not unsupported.applies and "significant label" in unsupported.reason
    ids = lambda names: [SEG_LABELS.index(n) for n in names if ctx_n[SEG_LABELS.index(n)]]
    group = {}
    for key, names in (("hi", hi_names), ("lo", lo_names)):
        i = ids(names)
        reps = (w.T @ per_sum[:, i]).sum(1) / np.maximum((w.T @ per_n[:, i]).sum(1), 1)
        group[key] = (ctx_sum[i].sum() / ctx_n[i].sum(), *np.quantile(reps, [0.005, 0.995]))
    (mh, lh, hh), (ml, ll, hl) = group["hi"], group["lo"]
    assert f is not None and f.samples == N
    if ml > 0:
        assert f.estimate == pytest.approx(mh / ml, rel=1e-3, abs=1e-4)
    assert f"{lh:.2%} to {hh:.2%}" in f.text and f"{ll:.2%} to {hl:.2%}" in f.text
    assert f.holds == bool(lh > hl and mh > 0 and (ml <= 0 or mh / ml >= 2.0))
    assert f.applies and f.kind == "pre-registered" and f.in_bounds()
    d = summary.differs_by_context()
    if d is not None:   # the extremes of m contexts: Bonferroni over m(m-1)/2 pairs
        m = sum(r["category"] == "object" for r in summary.contexts())
        m = m if m >= 2 else len(summary.contexts())
        assert d["z_critical"] == pytest.approx(
            scipy.stats.norm.ppf(1 - 0.01 / (m * (m - 1))))
        e = summary.finding()
        assert e.kind == "exploratory" and e.applies and e.in_bounds()


def test_pixel_shares_numpy():
    seg = np.random.default_rng(1).integers(0, 4, (3, 2, 5, 4)).astype(np.int32)
    got = np.asarray(intervene.pixel_shares(jnp.asarray(seg), 6))
    for b in range(3):
        for lab in range(6):
            assert got[b, lab] == pytest.approx(((seg[b] == lab).any(0)).mean())


@pytest.mark.slow
def test_bad_input_is_named(setup):
    _, src, split = setup
    with pytest.raises(ValueError, match="units"):
        intervene.insertion_by_context(split, TinySegmenter(), src, np.array([99]),
                                       np.array([1.0]), 1, L, progress=False)
    with pytest.raises(ValueError, match="masks"):
        intervene.ablation_share_deltas(split, TinySegmenter(), src, np.zeros(3), L,
                                        progress=False)


@pytest.mark.slow
def test_four_devices_give_the_one_device_sums(setup):
    _, src, split = setup
    devices = jax.local_devices()
    if len(devices) < 4:
        pytest.skip("needs 4 devices (XLA_FLAGS=--xla_force_host_platform_device_count=4)")
    masks = np.eye(UNITS)[:5]
    kw = dict(batch_size=8, chunk=2, progress=False)
    one = intervene.ablation_share_deltas(split, TinySegmenter(), src, masks, L,
                                          devices=devices[:1], **kw)
    four = intervene.ablation_share_deltas(split, TinySegmenter(), src, masks, L, **kw)
    ins = [intervene.insertion_by_context(split, TinySegmenter(), src, np.array([1, 4]),
                                          np.array([3.0, 2.5]), 3, L, devices=d, **kw)
           for d in (devices[:1], devices[:4])]
    for a, b in ((one, four), tuple(ins)):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
