"""Typed results saved and loaded exactly; the significance helpers against SciPy."""

import dataclasses

import numpy as np
import pytest
import scipy.stats

from jaxdissect.experiments import results, significance
from jaxdissect.labels import LabelSet


@results.typed
@dataclasses.dataclass(frozen=True, eq=False)
class _Inner:
    values: np.ndarray
    name: str


@results.typed
@dataclasses.dataclass(frozen=True, eq=False)
class _Outer(results.Saved):
    labels: LabelSet
    counts: np.ndarray
    by_class: dict
    pair: tuple
    missing: float
    optional: np.ndarray | None


def test_round_trip_keeps_types_dtypes_and_nan(tmp_path):
    r = _Outer(LabelSet.from_pairs([("sky", "object")]), np.arange(12, dtype=np.int16),
               {3: _Inner(np.array([1.5, np.nan]), "a"), 10: _Inner(np.zeros((2, 0)), "b")},
               (1, "x"), float("nan"), None)
    back = _Outer.load(r.save(str(tmp_path / "r.npz")))
    assert back.labels == r.labels and back.pair == (1, "x") and back.optional is None
    assert back.counts.dtype == np.int16 and back.counts.tolist() == list(range(12))
    assert set(back.by_class) == {3, 10} and isinstance(back.by_class[3], _Inner)
    np.testing.assert_array_equal(back.by_class[3].values, [1.5, np.nan])
    assert back.by_class[10].values.shape == (2, 0) and np.isnan(back.missing)
    with pytest.raises(ValueError, match="holds a _Outer, not a _Inner"):
        results.load(_Inner, str(tmp_path / "r.npz"))
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="not a jaxdissect results file"):
        _Outer.load(str(tmp_path / "other.npz"))


def test_intervals_and_overlap_vs_scipy():
    x = np.random.default_rng(0).normal(1, 2, 9)
    mean, lo, hi = significance.t_interval(x)
    want = scipy.stats.t.interval(0.99, 8, loc=x.mean(), scale=scipy.stats.sem(x))
    assert (lo, hi) == pytest.approx(want) and mean == pytest.approx(x.mean())
    assert significance.t_interval([1.0])[1] == -np.inf
    assert significance.bonferroni_z(0.99, 5) == pytest.approx(scipy.stats.norm.ppf(1 - 0.001))
    for ov, a, b, n in ((3, 5, 7, 30), (0, 4, 4, 10), (2, 2, 3, 8)):
        assert significance.overlap_p(ov, a, b, n) == pytest.approx(
            scipy.stats.hypergeom.sf(ov - 1, n, b, a))
    assert significance.overlap_p(0, 0, 5, 10) == 1.0


@pytest.mark.slow
def test_poisson_weights_depend_on_the_index_alone():
    idx = np.arange(40)
    w = np.asarray(significance.poisson_weights(idx, 300, seed=2))
    assert w.shape == (40, 300) and w.dtype == np.int32
    np.testing.assert_array_equal(np.asarray(significance.poisson_weights(idx[17:23], 300, 2)),
                                  w[17:23])
    assert abs(w.mean() - 1) < 0.05 and abs(w.var() - 1) < 0.1   # Poisson(1)
