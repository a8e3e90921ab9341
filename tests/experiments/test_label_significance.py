"""The significance pass of a dissection: p-values and intervals per labelled unit,
Benjamini-Hochberg."""

import json

import numpy as np
import pytest

from jaxdissect.experiments.dissect import DissectResult, dissect
from jaxdissect.experiments.label_significance import Significance, significance
from jaxdissect.labels import LabelSet
from jaxdissect.stats.permutation import benjamini_hochberg
from jaxdissect.stats.upsample import Upsampler
from tests.support.tiny_nets import ArraySource

LABELS = LabelSet.from_pairs([("sky", "object"), ("tree", "object"), ("brick", "material")])


def planted_source(n=48, seed=0):
    """Unit 0 fires on "tree" (label 2); units 1-2 are noise; acts on a 4x4 grid,
    segmentation on 8x8."""
    rng = np.random.default_rng(seed)
    seg = np.kron(rng.integers(0, 4, (n, 1, 4, 4)), np.ones((1, 1, 2, 2), int)).astype(np.int32)
    acts = rng.random((n, 4, 4, 3), dtype=np.float32)
    acts[..., 0] += 1.5 * (seg[:, 0, ::2, ::2] == 2)
    return ArraySource(acts=acts, seg=seg)


def compute(batch):
    return batch["acts"], batch["seg"]


@pytest.mark.slow
def test_significance_of_a_planted_unit_and_noise(tmp_path):
    src = planted_source()
    up = Upsampler.plain((4, 4), (8, 8))
    res = dissect(compute, src, LABELS, upsample=up, quantile=0.1, miniou=0.01,
                  batch_size=16, progress=False)
    sig = significance(compute, src, res, upsample=up, units=[0, 1, 2], batch_size=16,
                       permutations=1000, replicates=200, progress=False)
    assert np.array_equal(sig.units, [0, 1, 2])
    assert np.array_equal(sig.labels, res.best_label)
    assert np.allclose(sig.iou, res.best_iou)
    assert sig.p_value[0] < 0.001
    assert np.all(sig.p_value[1:] > 0.001)
    assert np.all(sig.iou_low <= sig.iou) and np.all(sig.iou <= sig.iou_high)
    assert sig.null_iou[0] < sig.iou_low[0]
    assert sig.discoveries(0.01)[0]
    per = sig.per_unit(5)
    assert per["p_value"][0] == sig.p_value[0] and np.isnan(per["p_value"][3:]).all()
    back = Significance.from_json(sig.to_json())
    for f in ("units", "labels", "iou", "p_value", "iou_low", "iou_high", "null_iou"):
        assert np.array_equal(getattr(back, f), getattr(sig, f))
    # default units: the labelled ones; the default upsampling is dissect's
    sig2 = significance(compute, src, res, batch_size=16, permutations=1000, replicates=200,
                        progress=False)
    assert np.array_equal(sig2.units, np.flatnonzero(res.labelled))
    assert np.array_equal(sig2.p_value, sig.p_value[sig2.units])
    # the result carries it: --max-p drops labels, records and files keep it
    assert res.labelled.all()
    carried = res.with_significance(sig, max_p=0.001)
    assert carried.labelled.tolist() == [True, False, False]
    recs = carried.units()
    assert recs[0]["p_value"] == sig.p_value[0] and recs[1]["iou_low"] == sig.iou_low[1]
    assert json.loads(json.dumps(carried.to_json()))["significance"]["units"] == [0, 1, 2]
    carried.save(str(tmp_path / "r.npz"))
    back = DissectResult.load(str(tmp_path / "r.npz"))
    assert back.max_p == 0.001 and np.array_equal(back.labelled, carried.labelled)
    assert np.array_equal(back.significance.p_value, sig.p_value)
    with pytest.raises(ValueError, match="max_p"):
        res.with_significance(sig, max_p=0)


@pytest.mark.slow
def test_a_different_compute_is_refused():
    src = planted_source(n=16)
    res = dissect(compute, src, LABELS, quantile=0.1, miniou=0.01, batch_size=16,
                  progress=False)
    with pytest.raises(ValueError, match="different intersections"):
        significance(lambda b: (b["acts"] * -1.0, b["seg"]), src, res, units=[0],
                     batch_size=16, permutations=10, replicates=10, progress=False)
    with pytest.raises(ValueError, match="units must be"):
        significance(compute, src, res, units=[7], progress=False)


def test_benjamini_hochberg():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5, np.nan])
    # sorted 0.005 0.01 0.03 0.04 0.5 against 0.05 k / 5: 0.01 0.02 0.03 0.04 0.05
    assert np.array_equal(benjamini_hochberg(p, 0.05), [1, 1, 1, 1, 0, 0])
    assert np.array_equal(benjamini_hochberg(p, 0.01), [0, 0, 0, 0, 0, 0])
    assert np.array_equal(benjamini_hochberg([0.001, 0.9], 0.01), [1, 0])
    with pytest.raises(ValueError):
        benjamini_hochberg(p, 0)


@pytest.mark.slow
def test_p_values_are_the_same_at_any_batch_size_and_device_count():
    """Blocks of images by global index: batch sizes 8, 32, 64 on one device and 32,
    64 on four give identical p-values, intervals and chance levels (50 images: the
    last block is partial)."""
    import jax
    src = planted_source(n=50, seed=2)
    up = Upsampler.plain((4, 4), (8, 8))
    res = dissect(compute, src, LABELS, upsample=up, quantile=0.1, miniou=0.01,
                  batch_size=16, progress=False)
    runs = [significance(compute, src, res, upsample=up, units=[0, 1, 2], batch_size=b,
                         permutations=200, replicates=50, progress=False,
                         devices=jax.local_devices()[:d])
            for b, d in ((8, 1), (32, 1), (64, 1), (32, 4), (64, 4))]
    for other in runs[1:]:
        for f in ("p_value", "iou_low", "iou_high", "null_iou", "iou"):
            assert np.array_equal(getattr(other, f), getattr(runs[0], f)), f
    assert runs[0].p_value[0] < 0.01
