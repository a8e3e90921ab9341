"""CW attack and unit shifts vs a PyTorch loss, NumPy and scipy oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import torch

from jaxdissect.experiments import attack
from jaxdissect.taps import run
from tests.support.tiny_nets import TinyClassifier, classifier_spec

MODEL = TinyClassifier()


def apply_logits(params, x):
    return MODEL.apply({"params": params}, x)


def conv5_3(params, x):
    return run(MODEL.apply, {"params": params}, x, capture="c2")[1]["c2"]


@pytest.fixture(scope="module")
def setup():
    params = MODEL.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    images = np.random.default_rng(0).uniform(0.05, 0.95, (6, 8, 8, 3)).astype(np.float32)
    pred = np.asarray(jnp.argmax(apply_logits(params, images), -1))
    return params, images, pred


def torch_loss(params, w, images, target, c, kappa):
    """The CW loss written independently in torch: sum of l2^2 + c * margin."""
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)

    def conv(x, p):
        return torch.nn.functional.conv2d(x, t(p["kernel"]).permute(3, 2, 0, 1), t(p["bias"]),
                                          padding=1)

    adv = (torch.tanh(w) + 1) / 2
    x = adv.permute(0, 3, 1, 2)
    x = torch.relu(conv(torch.relu(conv(x, params["c1"])), params["c2"]))
    x = torch.nn.functional.max_pool2d(x, 2)
    logits = x.flatten(1) @ t(params["fc"]["kernel"]) + t(params["fc"]["bias"])
    tl = logits[torch.arange(len(target)), torch.tensor(target)]
    masked = logits.clone()
    masked[torch.arange(len(target)), torch.tensor(target)] = -float("inf")
    f = torch.clamp(masked.max(1).values - tl, min=-kappa)
    l2 = ((adv - t(images)) ** 2).sum((1, 2, 3))
    return (l2 + torch.tensor(c, dtype=torch.float64) * f).sum()


@pytest.mark.slow
def test_gradient_matches_torch(setup):
    params, images, pred = setup
    target = (pred + 1) % 5
    w = np.asarray(attack.to_tanh_space(images)) + np.random.default_rng(1).normal(
        0, 0.3, images.shape).astype(np.float32)
    c = np.array([0.5, 1, 2, 3, 4, 5], np.float32)
    g = jax.grad(attack.cw_loss, argnums=2)(apply_logits, params, jnp.asarray(w),
                                             jnp.asarray(images), jnp.asarray(target),
                                             jnp.asarray(c), 0.3)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    loss = torch_loss(params, wt, images, target, c, 0.3)
    loss.backward()
    np.testing.assert_allclose(np.asarray(g), wt.grad.numpy(), rtol=2e-4, atol=2e-5)
    v = attack.cw_loss(apply_logits, params, jnp.asarray(w), jnp.asarray(images),
                       jnp.asarray(target), jnp.asarray(c), 0.3)
    np.testing.assert_allclose(float(v), loss.item(), rtol=1e-5)


def test_margin_vs_numpy():
    logits = np.random.default_rng(2).normal(size=(7, 4)).astype(np.float32)
    target = np.array([0, 1, 2, 3, 0, 1, 2])
    got = np.asarray(attack.margin(jnp.asarray(logits), jnp.asarray(target), 0.5))
    want = [max(max(np.delete(r, t)) - r[t], -0.5) for r, t in zip(logits, target)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_attack_reaches_target(setup):
    params, images, pred = setup
    target = (pred + 2) % 5
    res = attack.cw_attack(apply_logits, params, images, target, steps=60,
                           learning_rate=0.05, c=20.0, kappa=0.1)
    adv = np.asarray(res.adversarial)
    assert np.asarray(res.success).all()
    assert adv.min() >= 0 and adv.max() <= 1
    logits = np.asarray(apply_logits(params, adv))
    np.testing.assert_array_equal(logits.argmax(-1), target)
    np.testing.assert_allclose(np.asarray(res.l2),
                               np.sqrt(((adv - images) ** 2).sum((1, 2, 3))), rtol=1e-5)
    first = np.asarray(res.first_success)
    assert (first >= 0).all() and (first <= 60).all()
    # the perturbation stays small compared with the image
    assert np.asarray(res.l2).max() < 0.5 * np.sqrt((images ** 2).sum((1, 2, 3))).min()


def test_attack_bad_input(setup):
    params, images, pred = setup
    with pytest.raises(ValueError, match="target class"):
        attack.cw_attack(apply_logits, params, images, 7, steps=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack.cw_attack(apply_logits, params, images * 3, 0, steps=1)
    with pytest.raises(ValueError, match="batch, H, W, 3"):
        attack.cw_attack(apply_logits, params, images[0], 0, steps=1)


def test_unit_shift_vs_numpy(setup):
    params, images, _ = setup
    adv = np.clip(images + np.random.default_rng(3).normal(0, 0.2, images.shape), 0, 1)
    shift = attack.unit_shift(conv5_3, params, images, adv, batch_size=4)
    a_clean = np.asarray(conv5_3(params, images), np.float64)
    a_adv = np.asarray(conv5_3(params, jnp.asarray(adv, jnp.float32)), np.float64)
    np.testing.assert_allclose(shift.clean, a_clean.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(shift.delta, a_adv.mean((0, 1, 2)) - a_clean.mean((0, 1, 2)),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(shift.per_image, a_adv.mean((1, 2)) - a_clean.mean((1, 2)),
                               rtol=1e-4, atol=1e-6)
    up, down = shift.most_moved(2)
    d = shift.delta
    assert list(up) == sorted(range(d.size), key=lambda u: -d[u])[:2]
    assert list(down) == sorted(range(d.size), key=lambda u: d[u])[:2]
    with pytest.raises(ValueError, match="differ in shape"):
        attack.unit_shift(conv5_3, params, images, adv[:2])


def test_significant_units_vs_scipy():
    """A unit counts as moved only if its paired change is significant (t-test,
    Bonferroni over units); a change of exactly 0 on every image never is."""
    rng = np.random.default_rng(2)
    n, units = 12, 10
    per = rng.normal(0, 1, (n, units)) + np.linspace(-3, 3, units)
    per[:, 4] = 0.0                                   # a dead unit: +0.0000 everywhere
    shift = attack.UnitShift(np.zeros(units), per.mean(0), per)
    p = scipy.stats.ttest_1samp(per, 0.0).pvalue
    want = np.nan_to_num(p, nan=1.0) < 0.01 / units
    np.testing.assert_array_equal(shift.significant(), want)
    assert not shift.significant()[4]
    up, down = shift.most_moved(3, level=0.99)
    d = per.mean(0)
    assert list(down) == [u for u in np.argsort(d) if want[u] and d[u] < 0][:3]
    assert list(up) == [u for u in np.argsort(-d) if want[u] and d[u] > 0][:3]


def test_relate_to_importance_vs_oracles():
    rng = np.random.default_rng(4)
    units, classes, k, n = 30, 4, 5, 9
    ranking = np.stack([rng.permutation(units) for _ in range(classes)])
    per = rng.normal(0, 0.3, (n, units)) + np.round(rng.normal(size=units), 1) * 2
    per[:, :6] = 0.0                                  # ties at zero: never "moved"
    shift = attack.UnitShift(np.zeros(units), per.mean(0), per)
    delta = per.mean(0)
    r = attack.relate_to_importance(shift, ranking, source=1, target=3, k=k)
    sig = scipy.stats.ttest_1samp(per, 0.0).pvalue < 0.01 / units
    down = [u for u in sorted(range(units), key=lambda u: (delta[u], u))
            if sig[u] and delta[u] < 0][:k]
    up = [u for u in sorted(range(units), key=lambda u: (-delta[u], u))
          if sig[u] and delta[u] > 0][:k]
    assert r["moved_down"] == down and r["moved_up"] == up
    assert not set(range(6)) & set(down + up)
    ov = len(set(ranking[1, :k]) & set(down))
    assert r["source_top_in_moved_down"] == ov
    assert r["target_top_in_moved_up"] == len(set(ranking[3, :k]) & set(up))
    assert r["p_down"] == pytest.approx(scipy.stats.hypergeom.sf(ov - 1, units, k, len(down)))
    assert r["source_top_mean_delta"] == pytest.approx(delta[ranking[1, :k]].mean())
    g = per[:, ranking[1, :k]].mean(1) - per.mean(1)
    lo, hi = scipy.stats.t.interval(0.99, n - 1, loc=g.mean(), scale=scipy.stats.sem(g))
    assert r["source_gap"]["ci99"] == pytest.approx([lo, hi])
    pos = np.argsort(ranking[1])                    # position of each unit in the ranking
    rho = scipy.stats.spearmanr(delta, -pos).statistic
    assert r["spearman_delta_vs_source_importance"] == pytest.approx(rho, abs=1e-12)
    assert r["chance_down"] == pytest.approx(k * len(down) / units)
    with pytest.raises(ValueError, match="source class"):
        attack.relate_to_importance(shift, ranking, source=9, target=0)
    with pytest.raises(ValueError, match="units"):
        attack.relate_to_importance(attack.UnitShift(np.zeros(3), np.zeros(3),
                                                     np.zeros((2, 3))), ranking, 0, 1)


def test_attack_result_round_trip_and_findings(tmp_path):
    rng = np.random.default_rng(1)
    units, n = 12, 8
    per = rng.normal(0, 0.1, (n, units))
    per[:, :3] -= 2.0                                 # the source's top units fall
    ranking = np.stack([np.arange(units), np.arange(units)[::-1]])
    res = attack.AttackResult(
        model="m", layer="conv5_3", source_class="a", target_class="b", source_index=0,
        target_index=1, steps=5, learning_rate=0.1, c=1.0, kappa=0.0,
        image_index=np.arange(n), success=np.ones(n, bool), l2=np.full(n, 0.5),
        adversarial_class=("b",) * n, first_success=np.zeros(n, np.int64),
        shift=attack.UnitShift(np.ones(units), np.ones(units) + per.mean(0), per),
        ranking=ranking, ranking_from="test", unit_labels=None, top=3,
        recognition=(9, 10, 3, 90))
    back = attack.AttackResult.load(res.save(str(tmp_path / "a.npz")))
    assert back.to_json() == res.to_json()
    assert back.shift.per_image.dtype == np.float64 and back.ranking.dtype == ranking.dtype
    f = res.findings()
    assert [x.holds for x in f][:2] == [True, True]   # success; source top units lowered
    assert f[3].holds and f[3].p_value == pytest.approx(1 / 220)
    assert "8 images" in f[1].text
    assert all(x.applies and x.in_bounds() for x in f)
    # a classifier that calls half the "a" images and a third of the others "a" does
    # not know "a"
    import dataclasses
    for rec in ((5, 10, 30, 90), None):
        g = dataclasses.replace(res, recognition=rec).findings()
        assert len(g) == 5 and not any(x.holds or x.applies for x in g)
        assert all(("does not recognise a" if rec else "not measured") in x.reason for x in g)


@pytest.mark.slow
def test_class_logit_drop_vs_torch_loop(setup):
    from jaxdissect.experiments.ablate import split_classifier
    from tests.support.tiny_nets import ArraySource, torch_classifier

    params, images, _ = setup
    rng = np.random.default_rng(6)
    imgs = rng.uniform(size=(10, 8, 8, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4, 0, 1, 2, 0, 0], np.int32)
    src = ArraySource(image=imgs, label=labels)
    split = split_classifier(classifier_spec(params, MODEL), "conv5_3")
    drop, count = attack.class_logit_drop(split, src, 6, 5, batch_size=4, chunk=4)
    np.testing.assert_array_equal(count, np.bincount(labels, minlength=5))
    base = torch_classifier(params)(imgs).numpy().astype(np.float64)
    want = np.zeros((5, 6))
    for u in range(6):
        out = torch_classifier(params, ablate=[u])(imgs).numpy().astype(np.float64)
        d = base[np.arange(10), labels] - out[np.arange(10), labels]
        want[:, u] = np.bincount(labels, weights=d, minlength=5) / np.bincount(labels)
    np.testing.assert_allclose(drop, want, rtol=1e-4, atol=1e-5)
    # the attack's class ranking: balanced-accuracy damage, ties by the logit drop
    pred0 = base.argmax(1)

    def ba(pred):
        out = []
        for c in range(5):
            t, p = labels == c, pred == c
            out.append(((t & p).sum() / t.sum() + (~t & ~p).sum() / (~t).sum()) / 2)
        return np.array(out)

    damage = np.stack([ba(torch_classifier(params, ablate=[u])(imgs).numpy().argmax(1))
                       - ba(pred0) for u in range(6)], 1)              # [C, u]
    got = attack.importance_ranking(split, src, 6, 5, batch_size=4, chunk=4, progress=False)
    np.testing.assert_array_equal(got, attack.rank_with_tiebreak(damage, want))


def test_rank_with_tiebreak():
    damage = np.array([[0.0, -0.1, 0.0, 0.0, np.nan], [0.0, 0.0, 0.0, 0.0, 0.0]])
    drop = np.array([[0.5, 0.0, 0.9, 0.5, 9.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    got = attack.rank_with_tiebreak(damage, drop)
    want = [sorted(range(5), key=lambda u: (np.nan_to_num(damage[c, u], nan=np.inf),
                                            -drop[c, u], u)) for c in range(2)]
    np.testing.assert_array_equal(got, want)
    assert got[0].tolist() == [1, 2, 0, 3, 4]


def test_attack_compiles_once(setup):
    params, images, pred = setup
    before = attack._attack_steps._cache_size()
    for target, c in ((0, 1.0), (3, np.arange(6, dtype=np.float32))):
        attack.cw_attack(apply_logits, params, images, target, steps=3, c=c)
    assert attack._attack_steps._cache_size() == before + 1


def test_attack_in_chunks_equals_one_scan(setup, capsys):
    """The steps run in compiled chunks (progress after each) give what one scan over all
    the steps gives."""
    params, images, _ = setup
    target = jnp.full((images.shape[0],), 1, jnp.int32)
    c = jnp.ones((images.shape[0],), jnp.float32)
    assert attack._chunk(40) == 20 and attack._chunk(37) == 1 and attack._chunk(7) == 7
    got = attack.cw_attack(apply_logits, params, images, 1, steps=40, progress=True)
    carry = attack._attack_init(jnp.asarray(images), learning_rate=0.01)
    carry = attack._attack_steps(apply_logits, params, jnp.asarray(images), target, c, carry,
                                 jnp.int32(0), steps=40, learning_rate=0.01, kappa=0.0)
    want = attack._attack_finish(apply_logits, params, jnp.asarray(images), target, carry,
                                 steps=40)
    for f in ("adversarial", "success", "l2", "logits", "first_success"):
        np.testing.assert_allclose(np.asarray(getattr(got, f), np.float64),
                                   np.asarray(getattr(want, f), np.float64),
                                   rtol=1e-6, atol=1e-6, err_msg=f)
    assert "attack (Adam steps)" in capsys.readouterr().err
