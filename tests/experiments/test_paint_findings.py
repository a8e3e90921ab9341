"""Painting's finding: what must hold for it to mean something (latents enough to
decide, a painted unit significantly labelled the concept, the concept present in
the box to remove it or not filling it to add it), its interval (a change of a
share, bootstrap percentiles within [-1, 1]) and its sign-flip test against SciPy;
on a random plain-Flax generator, painting units whose labels are not significant
does not apply."""

import math

import numpy as np
import pytest
import scipy.stats

from jaxdissect.experiments import paint
from jaxdissect.experiments.significance import sign_flip_p


def edit(before, after, mode="off", significant=(True, False), region=100):
    return paint.PaintEdit("tree", mode, (0.0, 0.0, 1.0, 0.5), np.array([3, 1]),
                           np.array([0.2, 0.1]), np.zeros(2), "world", region,
                           np.asarray(before), np.asarray(after),
                           None if significant is None else np.array(significant))


@pytest.mark.parametrize("n", [2, 5, 8, 11, 30])
def test_sign_flip_p_matches_scipy(n):
    d = np.random.default_rng(n).integers(-6, 4, n).astype(float)
    for alt in ("less", "greater"):
        want = scipy.stats.permutation_test(
            (d,), np.mean, permutation_type="samples", alternative=alt,
            n_resamples=np.inf if n <= 16 else 9999, random_state=0).pvalue
        got = sign_flip_p(d, alt)
        if n <= 16:      # exact: every sign pattern
            assert got == pytest.approx(want, rel=1e-12)
        else:            # random patterns on both sides
            assert got == pytest.approx(want, abs=0.01)
    assert sign_flip_p(-np.ones(8), "less") == 2.0 ** -8
    with pytest.raises(ValueError, match="alternative"):
        sign_flip_p(d, "two-sided")


def test_paint_finding_against_numpy():
    rng = np.random.default_rng(0)
    before = rng.integers(20, 90, 12)
    after = np.maximum(before - rng.integers(-5, 40, 12), 0)
    f = edit(before, after).finding()
    assert f.applies and f.kind == "pre-registered" and f.bounds == (-1.0, 1.0)
    change = (after - before) / 100.0
    assert f.estimate == pytest.approx(change.mean())
    w = np.random.default_rng(0).poisson(1.0, (12, paint.REPLICATES))
    np.testing.assert_array_equal(paint.bootstrap_weights(12)[:5], paint.bootstrap_weights(5))
    reps = [np.dot(w[:, b], change) / w[:, b].sum() for b in range(w.shape[1])
            if w[:, b].sum() > 0]
    assert (f.low, f.high) == pytest.approx(tuple(np.quantile(reps, [0.005, 0.995])))
    p = scipy.stats.permutation_test((change,), np.mean, permutation_type="samples",
                                     alternative="less", n_resamples=np.inf).pvalue
    assert f.p_value == pytest.approx(p)
    assert f.holds == (p < 0.005) and f.in_bounds()
    assert "(1 of them significantly labelled tree)" in f.text
    # the same numbers the other way: turning units on that removed trees does not hold
    g = edit(before, after, mode="on").finding()
    assert g.applies and not g.holds and g.p_value > 0.5


def test_every_change_one_way_at_the_fewest_latents_holds():
    f = edit([50] * 8, [10] * 8).finding()
    assert f.holds and f.p_value == 2.0 ** -8
    assert f.low == pytest.approx(-0.4) and f.high == pytest.approx(-0.4)


@pytest.mark.parametrize("case,reason", [
    (dict(before=[50] * 7, after=[10] * 7), "7 latents measured, fewer than 8"),
    (dict(before=[50] * 8, after=[10] * 8, significant=None), "not tested for significance"),
    (dict(before=[50] * 8, after=[10] * 8, significant=(False, False)),
     "none of the 2 units painted has tree as a significant label"),
    (dict(before=[0] * 7 + [30], after=[0] * 8), "tree is not present in the box"),
    (dict(before=[100] * 8, after=[100] * 8, mode="on"), "tree already fills the box"),
])
def test_painting_that_means_nothing_says_why(case, reason):
    f = edit(**case).finding()
    assert not f.applies and not f.holds and reason in f.reason, f.reason
    assert f.status == "not applicable" and math.isnan(f.estimate)
    assert f.plain().startswith("[not applicable] (pre-registered) Turning 2 tree units")


def test_unmeasured_edit_states_no_finding_and_the_result_keeps_significance(tmp_path):
    e = paint.PaintEdit("tree", "on", (0, 0, 1, 1), np.array([0]), np.array([0.1]),
                        np.array([2.0]))
    assert e.finding() is None
    measured = edit([50] * 8, [10] * 8)
    res = paint.PaintResult("m", "layer4", 2, 8, 100, (e, measured))
    back = paint.PaintResult.load(res.save(str(tmp_path / "p.npz")))
    assert back.to_json() == res.to_json()
    assert back.to_json()["edits"][1]["significant"] == [True, False]
    assert [f["status"] for f in back.to_json()["findings"]] == ["holds"]


@pytest.mark.slow
def test_random_generator_painting():
    """A random plain-Flax generator (``tests.experiments.test_random_models``), dissected over
    64 z with its labels tested, its units painted over 16 latents. Green and blue:
    no painted unit is significantly labelled, so nothing applies, and it says why.
    Dark: a random generator's units do set its pixels' brightness, the dark units
    pass their test, and turning them on darkens the box (checked on the images'
    pixels), so that finding holds."""
    from jaxdissect.experiments import intervene
    from tests.experiments.test_random_models import UNITS, dissected_generator
    from tests.support.tiny_nets import SEG_LABELS, ArraySource

    spec, seg, _, res, sig = dissected_generator()
    labels = sig.significant_labels(UNITS, intervene.LABEL_FDR)
    left, right = (0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0)
    plan = [("green", "off", left), ("blue", "on", right), ("dark", "on", right)]
    ids = [SEG_LABELS.index(c) for c, _, _ in plan]
    units = [paint.concept_units(res.iou, SEG_LABELS.names, c, 4) for c, _, _ in plan]
    edits = [paint.paint_edit(u, UNITS, paint.region_to_grid(paint.box_mask((16, 16), b),
                                                              (8, 8)), m, res.levels[0.005])
             for u, (_, m, b) in zip(units, plan)]
    regions = np.stack([paint.box_mask((16, 16), b) for _, _, b in plan])
    zs = np.random.default_rng(2).standard_normal((16, 8)).astype(np.float32)
    out = paint.paint_source(intervene.split_generator(spec, "block"), ArraySource(z=zs),
                             paint.stack_edits(edits), batch_size=8, segment=seg,
                             labels=ids, regions=regions)
    findings = [paint.PaintEdit(c, m, b, u, res.iou[u, i], np.zeros(len(u)), "tiny",
                                int(r.sum()), out["before"][e], out["after"][e],
                                labels[u] == i).finding()
                for e, ((c, m, b), u, i, r) in enumerate(zip(plan, units, ids, regions))]
    print("significant labels:", labels)
    print(*(f.plain() for f in findings), sep="\n")
    green, blue, dark = findings
    for f in (green, blue):
        assert not f.applies and not f.holds, f.plain()
        assert "has " + f.text.split("<b>")[1].split("</b>")[0] + " as a significant" in f.reason
    assert dark.applies and dark.holds and dark.in_bounds() and dark.estimate > 0
    box = regions[2] > 0
    brightness = lambda images: images.mean(-1)[:, box].mean(-1)      # noqa: E731
    assert np.all(brightness(out["images"][2]) < brightness(out["base"]))
