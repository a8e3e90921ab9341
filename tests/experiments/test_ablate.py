"""Classifier unit ablation against the reference's algorithm run in PyTorch: one full
forward per ablated set, per-class precision/recall/balanced accuracy from counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxdissect.experiments import ablate
from jaxdissect.runtime.cache import run_cache
from tests.support.tiny_nets import ArraySource, TinyClassifier, classifier_spec, torch_classifier

UNITS, CLASSES = 6, 5


@pytest.fixture(scope="module")
def setup():
    model = TinyClassifier(units=UNITS, classes=CLASSES)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
    rng = np.random.default_rng(0)

    def split(n, seed):
        r = np.random.default_rng(seed)
        x = r.random((n, 8, 8, 3), dtype=np.float32)
        pred = torch_classifier(params)(x).argmax(1).numpy()
        # mostly the model's own answer, so accuracies are far from chance
        y = np.where(r.random(n) < 0.7, pred, r.integers(0, CLASSES, n)).astype(np.int32)
        return ArraySource(image=x, label=y)

    del rng
    return model, params, split(40, 1), split(30, 2)


def torch_pra(params, source, ablated):
    """The reference's ``test_perclass_pra``: counts from a full forward, float64."""
    x, y = source.arrays["image"], torch.tensor(source.arrays["label"]).long()
    with torch.no_grad():
        pred = torch_classifier(params, ablate=ablated)(x).argmax(1)
    n = len(y)
    true = y.bincount(minlength=CLASSES).double()
    predc = pred.bincount(minlength=CLASSES).double()
    corr = y.bincount((pred == y).double(), minlength=CLASSES).double()
    tn = (n - true) - (predc - corr)
    recall, tnr = corr / true, tn / (n - true)
    logp = torch.log_softmax(torch_classifier(params, ablate=ablated)(x).double(), 1)
    lp = torch.zeros(CLASSES, dtype=torch.float64).index_add_(0, y, logp[torch.arange(n), y])
    return {"precision": (corr / predc).numpy(), "recall": recall.numpy(),
            "ba": ((recall + tnr) / 2).numpy(), "logp": (lp / true).numpy()}


@pytest.mark.slow
def test_metrics_and_single_unit_sweep_match_torch(setup):
    model, params, train, _ = setup
    split = ablate.split_classifier(classifier_spec(params, model), "conv5_3")
    masks = np.concatenate([np.zeros((1, UNITS)), np.eye(UNITS), [[1, 0, 1, 0, 0, 1]]])
    m = ablate.measure(split, train, masks, CLASSES, batch_size=7, chunk=3,
                       progress=False)
    sets = [[]] + [[u] for u in range(UNITS)] + [[0, 2, 5]]
    for i, s in enumerate(sets):
        ref = torch_pra(params, train, s)
        np.testing.assert_allclose(m.balanced_accuracy[i], ref["ba"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(m.recall[i], ref["recall"], atol=1e-12)
        np.testing.assert_allclose(m.precision[i], ref["precision"], atol=1e-12)


@pytest.mark.slow
def test_whole_experiment_matches_torch_loop(setup, tmp_path):
    model, params, train, val = setup
    split = ablate.split_classifier(classifier_spec(params, model), "conv5_3")
    ks = (1, 2, 4, 20)
    iou = np.linspace(0, 0.3, UNITS)
    res = ablate.run_experiment(split, train, val, UNITS, CLASSES, ks=ks,
                                curve_classes=(1,), unit_iou=iou, batch_size=16, chunk=5,
                                replicates=50, cache=_cache(tmp_path, split, val), progress=False)
    # oracle: the reference's procedure, one full torch forward per ablated set
    base_train = torch_pra(params, train, [])["ba"]
    single = np.stack([torch_pra(params, train, [u])["ba"] for u in range(UNITS)])
    single_lp = np.stack([torch_pra(params, train, [u])["logp"] for u in range(UNITS)])
    # balanced-accuracy damage first, ties by the class's mean log-probability
    ranking = np.stack([sorted(range(UNITS), key=lambda u: (
        single[u, c] - base_train[c], single_lp[u, c], u)) for c in range(CLASSES)])
    np.testing.assert_allclose(res.single_unit_logp_train, single_lp, rtol=1e-4)
    np.testing.assert_array_equal(res.ranking, ranking)
    assert res.ks == (1, 2, 4, UNITS)
    np.testing.assert_allclose(res.baseline_val.balanced_accuracy,
                               torch_pra(params, val, [])["ba"], atol=1e-12)
    for c in range(CLASSES):
        for i, k in enumerate(res.ks):
            rm = torch_pra(params, val, ranking[c, :k].tolist())["ba"][c]
            kp = torch_pra(params, val, ranking[c, k:].tolist())["ba"][c]
            assert res.removed_top_k_ba[c, i] == pytest.approx(rm, abs=1e-12)
            assert res.kept_top_k_ba[c, i] == pytest.approx(kp, abs=1e-12)
    curve = res.curves[1]
    for k in (1, 3, 5):
        assert curve.removed[k - 1] == pytest.approx(
            torch_pra(params, val, ranking[1, :k].tolist())["ba"][1], abs=1e-12)
        assert curve.kept[k - 1] == pytest.approx(
            torch_pra(params, val, ranking[1, k:].tolist())["ba"][1], abs=1e-12)
    counts = np.bincount(ranking[:, :4].ravel(), minlength=UNITS)
    np.testing.assert_array_equal(res.importance_counts, counts)
    rows = res.importance_vs_iou()["rows"]
    for r in rows[:-1]:
        sel = counts == r["classes"]
        assert r["units"] == sel.sum()
        if sel.any():
            assert r["mean_iou"] == pytest.approx(iou[sel].mean())
    assert res.train_examples == 40 and res.val_examples == 30
    # the findings' bootstrap: every replicate's mean balanced accuracies from torch's
    # per-image predictions, weighted by the same Poisson draws of each image's index
    from jaxdissect.experiments.significance import poisson_weights
    w = np.asarray(poisson_weights(np.arange(30), 50)).astype(np.float64)     # [n, B]
    y = val.arrays["label"]

    def boot_ba(pred, c):
        np.seterr(divide="ignore", invalid="ignore")
        t, p, k = w[y == c].sum(0), w[pred == c].sum(0), w[(pred == c) & (y == c)].sum(0)
        n = w.sum(0)
        return (k / t + (n - t - (p - k)) / (n - t)) / 2

    x = val.arrays["image"]
    with torch.no_grad():
        base_pred = torch_classifier(params)(x).argmax(1).numpy()
        for i, k in enumerate(res.ks):
            rm = [boot_ba(torch_classifier(params, ablate=ranking[c, :k].tolist())(x)
                          .argmax(1).numpy(), c) for c in range(CLASSES)]
            kp = [boot_ba(torch_classifier(params, ablate=ranking[c, k:].tolist())(x)
                          .argmax(1).numpy(), c) for c in range(CLASSES)]
            # a replicate that draws no image of a class averages over the others
            mb = np.nanmean([boot_ba(base_pred, c) for c in range(CLASSES)], 0)
            rm, kp = np.nanmean(rm, 0), np.nanmean(kp, 0)
            np.testing.assert_allclose(res.bootstrap[:, i, 0], mb, atol=1e-12)
            np.testing.assert_allclose(res.bootstrap[:, i, 1], rm, atol=1e-12)
            np.testing.assert_allclose(res.bootstrap[:, i, 2], kp, atol=1e-12)
            if k == 4:
                at4 = mb, rm, kp
    # the findings apply only when the baseline's whole interval is above chance, and
    # hold only when the whole interval clears the criterion
    s = res.summary(k=4)
    mb, rm, kp = at4
    toward = (mb - rm) / (mb - 0.5)
    margin = (kp - 0.5) / (mb - 0.5)
    applies = np.quantile(mb, 0.005) > 0.5
    assert s["mean_baseline_ba_ci99"] == pytest.approx(tuple(np.quantile(mb, [0.005, 0.995])))
    for f, (lo, hi) in zip(res.findings(k=4), (np.quantile(toward, [0.005, 0.995]),
                                              np.quantile(margin, [0.005, 0.995]))):
        assert f.applies == applies and f.samples == 30
        if applies:
            assert (f.low, f.high) == pytest.approx((lo, hi))
            assert f.holds == (lo >= 0.5)
        else:
            assert not f.holds and "not above chance" in f.reason
    assert s["k"] == 4
    # typed round trip; re-running reuses the caches and gives the same answer
    back = ablate.AblationResult.load(res.save(str(tmp_path / "ablation.npz")))
    assert back.to_json() == res.to_json()
    assert back.ranking.dtype == res.ranking.dtype and back.curves[1].k.dtype == np.int64
    again = ablate.run_experiment(split, train, val, UNITS, CLASSES, ks=ks,
                                  curve_classes=(1,), unit_iou=iou, batch_size=16, chunk=5,
                                  replicates=50, cache=_cache(tmp_path, split, val), progress=False)
    assert again.to_json() == res.to_json()


def _cache(tmp_path, split, source):
    """The test run's cache (its model: the split's weights; its layer: conv5_3)."""
    return run_cache(str(tmp_path), model=split.params, layer="conv5_3", data=source,
                     segmenter=None)


class _Dies(ArraySource):
    def __init__(self, inner, after):
        self.__dict__.update(inner.__dict__)
        self.after = after

    def batch(self, start, stop):
        if start >= self.after:
            raise KeyboardInterrupt
        return super().batch(start, stop)


@pytest.mark.slow
def test_killed_sweep_resumes_to_same_counts(setup, tmp_path):
    model, params, train, _ = setup
    split = ablate.split_classifier(classifier_spec(params, model), "conv5_3")
    masks = np.eye(UNITS)
    kw = dict(batch_size=8, progress=False, replicates=3, focus=np.arange(UNITS) % CLASSES)
    fresh = ablate.ablation_masks_counts(split, train, masks, CLASSES, **kw)
    with pytest.raises(KeyboardInterrupt):
        ablate.ablation_masks_counts(split, _Dies(train, 24), masks, CLASSES,
                                     cache=_cache(tmp_path, split, train), checkpoint_every=1,
                                     **kw)
    [ckpt] = tmp_path.glob("ablate-*.npz")
    from jaxdissect.runtime import treefile
    assert treefile.read(str(ckpt))[1]["offset"] == 24
    resumed = ablate.ablation_masks_counts(split, _Dies(train, 40), masks, CLASSES,
                                           cache=_cache(tmp_path, split, train), **kw)
    for k in fresh:
        np.testing.assert_array_equal(fresh[k], resumed[k])


@pytest.mark.slow
def test_four_devices_give_the_one_device_counts(setup):
    model, params, train, _ = setup
    devices = jax.local_devices()
    if len(devices) < 4:
        pytest.skip("needs 4 devices (XLA_FLAGS=--xla_force_host_platform_device_count=4)")
    split = ablate.split_classifier(classifier_spec(params, model), "conv5_3")
    masks = np.concatenate([np.eye(UNITS), [[1, 0, 1, 0, 0, 1]]])
    kw = dict(batch_size=8, chunk=3, progress=False, replicates=4,
              focus=np.arange(UNITS + 1) % CLASSES)
    one = ablate.ablation_masks_counts(split, train, masks, CLASSES, devices=devices[:1], **kw)
    four = ablate.ablation_masks_counts(split, train, masks, CLASSES, devices=devices[:4], **kw)
    for k in one:
        np.testing.assert_array_equal(one[k], four[k], err_msg=k)


@pytest.mark.slow
def test_bad_input_is_named(setup):
    model, params, train, _ = setup
    split = ablate.split_classifier(classifier_spec(params, model), "conv5_3")
    with pytest.raises(ValueError, match="units"):
        ablate.measure(split, train, np.zeros((2, UNITS + 1)), CLASSES, progress=False)
    with pytest.raises(ValueError, match="scores 5 classes but num_classes is 2"):
        ablate.measure(split, train, np.zeros((1, UNITS)), 2, progress=False)
    bad = ArraySource(image=train.arrays["image"], label=train.arrays["label"] + 3)
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 5\)"):
        ablate.measure(split, bad, np.zeros((1, UNITS)), CLASSES, progress=False)


@pytest.mark.slow
def test_vgg_single_unit_shortcut_equals_edited_tail():
    from jaxdissect.edits import zero_units
    from jaxdissect.models import vgg16
    from jaxdissect.models.vgg16 import VGG16
    model = VGG16(widths=(4, 4, 8, 8, 12), fc_width=16, num_classes=7, pool_hw=(3, 3))
    x = np.random.default_rng(0).random((6, 32, 32, 3), dtype=np.float32)
    params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 32, 32, 3)))["params"]
    spec = vgg16.spec(model, params, input_size=(32, 32))
    split = ablate.split_classifier(spec, "conv5_3")
    assert split.single_unit is not None
    assert ablate.split_classifier(spec, "conv5_2").single_unit is None
    acts = split.head(split.params, {"image": x})
    fast = split.single_unit(split.params, acts)
    slow = jnp.stack([split.tail(split.params, acts, jax.tree_util.tree_map(
        lambda a: a.reshape(1, 1, 1, -1), zero_units([u], 12))) for u in range(12)])
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5 * float(jnp.abs(slow).max()))
    labels = np.random.default_rng(1).integers(0, 7, 6).astype(np.int32)
    src = ArraySource(image=x, label=labels)
    a = ablate.ablation_masks_counts(split, src, np.eye(12), 7, batch_size=4, chunk=5,
                                     progress=False)
    b = ablate.ablation_masks_counts(split._replace(single_unit=None), src, np.eye(12), 7,
                                     batch_size=4, chunk=5, progress=False)
    for k in ("true", "pred", "correct", "total"):
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_allclose(a["logp"], b["logp"], rtol=1e-5)
    np.testing.assert_allclose(a["drop"], b["drop"], rtol=1e-4, atol=1e-4)


def test_sweep_step_traces_once(setup):
    """40 examples in batches of 16 (the last one short, padded): the step with its
    stack of edits is traced once."""
    model, params, train, _ = setup
    split = ablate.split_classifier(classifier_spec(params, model), "conv5_3")
    traces = []

    def head(p, batch):
        traces.append(1)
        return split.head(p, batch)

    ablate.ablation_masks_counts(split._replace(head=head), train, np.eye(UNITS)[:4], CLASSES,
                                 batch_size=16, chunk=3, progress=False)
    assert len(traces) == 1
