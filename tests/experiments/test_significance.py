"""Findings: what "not applicable" means, their kinds, the ranges their intervals
respect, and the Wilson interval against SciPy."""

import dataclasses
import json
import math

import numpy as np
import pytest
import scipy.stats

from jaxdissect.experiments.significance import (
    EXPLORATORY,
    UNIT_RANGE,
    Finding,
    bootstrap_interval,
    wilson_interval,
)


@pytest.mark.parametrize("hits,n", [(0, 10), (3, 10), (10, 10), (1, 1), (37, 400)])
def test_wilson_interval_matches_scipy_and_stays_in_range(hits, n):
    want = scipy.stats.binomtest(hits, n).proportion_ci(0.99, method="wilson")
    lo, hi = wilson_interval(hits, n, 0.99)
    assert (lo, hi) == pytest.approx((want.low, want.high), abs=1e-12)
    assert 0 <= lo <= hits / n <= hi <= 1
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_percentiles_of_a_share_stay_in_range():
    """Replicates of a share near its bound: the percentile interval stays inside
    (a normal interval, mean plus or minus 2.58 standard deviations, would not)."""
    reps = np.clip(np.random.default_rng(0).normal(0.99, 0.02, 1000), 0, 1)
    lo, hi = bootstrap_interval(reps)
    assert 0 <= lo <= hi <= 1
    assert reps.mean() + 2.58 * reps.std() > 1


def test_a_finding_that_does_not_apply_never_holds_and_says_why():
    f = Finding.not_applicable("Removing <b>tree</b> units removes trees.",
                               "tree is not present", samples=8, bounds=UNIT_RANGE)
    assert not f.holds and not f.applies and f.status == "not applicable"
    assert f.plain() == ("[not applicable] (pre-registered) Removing tree units removes "
                         "trees. Not applicable: tree is not present")
    assert "<b>Not applicable:</b> tree is not present" in f.sentence()
    d = json.loads(json.dumps(f.to_json()))
    assert d["status"] == "not applicable" and d["estimate"] is None
    assert d["bounds"] == [0.0, 1.0] and d["reason"] == "tree is not present"
    forced = Finding("x", True, 0.5, 0.4, 0.6, 0.1, 3, applies=False, reason="why")
    assert not forced.holds
    with pytest.raises(ValueError, match="reason"):
        Finding("x", False, 0.5, 0.4, 0.6, 0.1, 3, applies=False)
    with pytest.raises(ValueError, match="exploratory"):
        Finding("x", False, 0.5, 0.4, 0.6, 0.1, 3, kind="post-hoc")


def test_in_bounds_and_kinds():
    inside = Finding("a share", True, 0.9, 0.8, 1.0, 0.5, 10, bounds=UNIT_RANGE,
                     kind=EXPLORATORY)
    assert inside.in_bounds() and inside.plain().startswith("[holds] (exploratory)")
    past = Finding("a share", True, 0.95, 0.9, 1.01, 0.5, 10, bounds=UNIT_RANGE)
    assert not past.in_bounds()
    open_ended = Finding("a ratio", False, 3.0, 1.0, math.inf, 5.0, 10, bounds=(0, math.inf))
    assert open_ended.in_bounds() and open_ended.to_json()["bounds"] == [0.0, None]


def test_the_exploratory_pair_comes_from_contexts_with_enough_edits():
    """Contexts with few edits (water 69, snow 23: the segmenter's rare labels in a
    village) are never the extremes; the pair is corrected over the supported pairs."""
    from jaxdissect.experiments.intervene import MIN_EDITS, InsertionSummary
    names = ("water", "grass", "house", "snow")
    rng = np.random.default_rng(0)
    counts = np.array([0, 69, 500, 400, 23])
    boot_n = rng.poisson(1.0, (300, 5)) * counts                      # [B, labels]
    boot_sum = boot_n * np.array([0, 0.05, 0.004, 0.002, -0.01]) + rng.normal(
        0, 0.05, (300, 5))
    summary = dict(significant=np.array([True, False]), boot_sum=boot_sum, boot_n=boot_n)
    ins = InsertionSummary(
        "door", np.array([0, 1]), np.array([1, 2, 3, 4]), names, ("object",) * 4,
        counts[1:], np.array([0.05, 0.004, 0.002, -0.01]),
        np.array([0.01, 0.001, 0.001, 0.01]), np.zeros((2, 2)), 64, **summary)
    d = ins.differs_by_context()
    assert (d["highest"], d["lowest"], d["pairs"]) == ("grass", "house", 1)
    assert MIN_EDITS == 100
    f = ins.finding()
    assert f.kind == EXPLORATORY and f.applies and f.in_bounds() and f.bounds == (-2, 2)
    assert "water" not in f.text and "snow" not in f.text
    # the gap's bootstrap percentiles (one pair: no correction), against NumPy
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = boot_sum[:, 2] / boot_n[:, 2] - boot_sum[:, 3] / boot_n[:, 3]
    want = np.quantile(reps[np.isfinite(reps)], [0.005, 0.995])
    assert (f.low, f.high) == pytest.approx(tuple(want))
    assert f.holds == (want[0] > 0) and f.estimate == pytest.approx(0.002)
    bare = dataclasses.replace(ins, boot_sum=None, boot_n=None).finding()
    assert not bare.applies and "without bootstrap replicates" in bare.reason
    alone = InsertionSummary(
        "door", np.array([0]), np.array([1, 4]), ("water", "snow"), ("object",) * 2,
        np.array([69, 23]), np.array([0.05, -0.01]), np.array([0.01, 0.01]),
        np.zeros((2, 2)), 64, significant=np.array([True]), boot_sum=boot_sum,
        boot_n=boot_n)
    g = alone.finding()
    assert not g.applies and not g.holds and "water 69, snow 23" in g.reason


def test_each_context_has_its_bootstrap_interval_and_the_plot_draws_it(tmp_path):
    """Each context's 99% interval is the percentile interval of its replicates (within
    [-1, 1]); the context plot draws it, and a context without one gets no bar."""
    from jaxdissect.experiments.intervene import InsertionSummary
    from jaxdissect.report import plots
    rng = np.random.default_rng(1)
    boot_n = rng.poisson(1.0, (200, 3)) * np.array([0, 300, 0])
    boot_sum = boot_n * 0.01 + rng.normal(0, 0.02, (200, 3))
    ins = InsertionSummary(
        "door", np.array([0]), np.array([1, 2]), ("grass", "sky"), ("object",) * 2,
        np.array([300, 1]), np.array([0.01, 0.0]), np.array([0.001, 0.0]), np.zeros((2, 2)),
        64, boot_sum=boot_sum, boot_n=boot_n)
    grass, sky = ins.contexts()
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = boot_sum[:, 1] / boot_n[:, 1]
    assert grass["ci99"] == pytest.approx(np.quantile(reps[np.isfinite(reps)], [0.005, 0.995]))
    assert sky["ci99"] == [-math.inf, math.inf]
    assert plots.insertion_contexts(str(tmp_path / "c.png"), "door",
                                    {"contexts": [grass, sky]}) == "c.png"
