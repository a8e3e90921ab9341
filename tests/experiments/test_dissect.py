"""End-to-end dissection against NumPy on all the data at once, a planted-unit
network, device/batch invariance, the radix path and resumable caches."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.experiments.dissect import DissectResult, dissect, spec_compute
from jaxdissect.labels import LabelSet
from jaxdissect.runtime import activations, treefile
from jaxdissect.runtime.cache import run_cache
from jaxdissect.runtime.fingerprint import fingerprint
from jaxdissect.spec import ModelSpec
from jaxdissect.stats import Upsampler

LABELS = LabelSet.from_pairs([("sky", "object"), ("tree", "object"), ("door", "object"),
                              ("brick", "material"), ("unused", "material")])


class ArraySource:
    """A random-access source over in-memory arrays."""

    seg_labels = LABELS
    class_names = None

    def __init__(self, **arrays):
        self.arrays = arrays
        self.num_examples = len(next(iter(arrays.values())))

    def batch(self, start, stop):
        return {k: v[start:stop] for k, v in self.arrays.items()}

    def identity(self):
        return {"arrays": fingerprint(self.arrays)}


class DyingSource(ArraySource):
    """Raises after ``lives`` batches, like a killed run."""

    def __init__(self, lives, **arrays):
        super().__init__(**arrays)
        self.lives = lives

    def batch(self, start, stop):
        if start > 0:  # the first batch is also used to probe shapes
            self.lives -= 1
            if self.lives < 0:
                raise RuntimeError("killed")
        return super().batch(start, stop)


def random_source(n=23, seed=0):
    rng = np.random.default_rng(seed)
    acts = rng.integers(0, 8, (n, 6, 6, 4)).astype(np.float32)  # ties after upsampling
    acts[..., 3] = 1.0  # constant unit: never above its threshold
    seg = rng.choice([0, 1, 2, 3, 4], size=(n, 2, 12, 12)).astype(np.int32)  # 5 absent
    return ArraySource(acts=acts, seg=seg)


UP = Upsampler.for_layers([(3, 1, 1), (2, 2, 0), (3, 1, 1)], (12, 12), (12, 12))


def compute(batch):
    return batch["acts"], batch["seg"]


def numpy_thresholds_iou(up, seg, q, num_labels):
    """The PNAS rule on all the data at once: ``up [n, H, W, u]`` upsampled
    activations, ``seg [n, K, H, W]`` -> thresholds ``[u]`` and IoU ``[u, L]``."""
    flat = up.reshape(-1, up.shape[-1])
    k = int(np.ceil(q * len(flat) - 1e-9))
    t = -np.sort(-flat, axis=0)[k - 1]
    a = up > t
    iou = np.zeros((up.shape[-1], num_labels))
    for c in range(1, num_labels):
        s = (seg == c).any(axis=1)[..., None]
        inter, union = (a & s).sum((0, 1, 2)), (a | s).sum((0, 1, 2))
        iou[:, c] = np.where(union > 0, inter / np.maximum(union, 1), 0)
    return t, iou


def numpy_dissection(source, q, miniou):
    up = np.asarray(UP(jnp.asarray(source.arrays["acts"])))  # upsampling tested elsewhere
    return numpy_thresholds_iou(up, source.arrays["seg"], q, len(LABELS))


def _cache(tmp_path, source):
    """The test run's cache (a random source's maps, no model)."""
    return run_cache(str(tmp_path), model="random maps", layer="acts", data=source,
                     segmenter="truth")


def run(source, **kw):
    kw = {"upsample": UP, "batch_size": 7, "progress": False, "topk": 3, **kw}
    return dissect(compute, source, LABELS, **kw)


def assert_same(a: DissectResult, b: DissectResult):
    for f in ("thresholds", "iou", "best_label", "best_iou", "intersections", "unit_area",
              "label_area", "topk_values", "topk_images"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    for q in a.levels:
        np.testing.assert_array_equal(a.levels[q], b.levels[q])


@pytest.mark.slow
def test_dissect_equals_numpy_for_batch_sizes_and_devices():
    source = random_source()
    t, iou = numpy_dissection(source, 0.05, 0.04)
    results = [run(source, quantile=0.05, batch_size=b) for b in (1, 7, 64)]
    results.append(run(source, quantile=0.05, devices=jax.local_devices()[:1]))
    for r in results:
        np.testing.assert_array_equal(r.thresholds, t)
        np.testing.assert_allclose(r.iou, iou, rtol=0, atol=1e-12)
        assert_same(results[0], r)
    r = results[0]
    assert not np.isnan(r.iou).any() and np.all(r.iou[:, 5] == 0)  # label never present
    assert np.all(r.iou[3] == 0) and r.unit_area[3] == 0  # constant unit never above
    maxima = source.arrays["acts"].max(axis=(1, 2))
    for u in range(4):
        order = np.lexsort((np.arange(len(maxima)), -maxima[:, u]))[:3]
        np.testing.assert_array_equal(r.topk_images[u], order)


@pytest.mark.slow
def test_radix_path_gives_the_same_exact_result():
    source = random_source(seed=1)
    fast = run(source, quantile=0.05, levels=(0.005,))
    radix = run(source, quantile=0.05, levels=(0.005,), budget=16)
    assert_same(fast, radix)
    assert set(radix.levels) == {0.05, 0.005}


@pytest.mark.slow
@pytest.mark.parametrize("budget,first,second", [(4096, "onepass", None),
                                                  (16, "quantile", "radix2")])
def test_killed_run_resumes_with_identical_results(tmp_path, budget, first, second,
                                                   monkeypatch):
    # each pass reading the source itself (a kept store is captured anew after a kill:
    # test_activation_store)
    monkeypatch.setenv(activations.ENV, "off")
    source = random_source(seed=2)
    fresh = run(source, quantile=0.05, budget=budget)
    dying = DyingSource(2, **source.arrays)
    with pytest.raises(RuntimeError, match="killed"):
        run(dying, quantile=0.05, cache=_cache(tmp_path, source), checkpoint_every=1,
            budget=budget)
    [ckpt] = tmp_path.glob(f"{first}-*.npz")
    offset = treefile.read(str(ckpt))[1]["offset"]
    assert 0 < offset < source.num_examples
    if second is not None:  # the radix path dies again, in a later pass
        dying = DyingSource(1, **source.arrays)
        with pytest.raises(RuntimeError, match="killed"):
            run(dying, quantile=0.05, cache=_cache(tmp_path, source),
                checkpoint_every=1, budget=budget)
        assert list(tmp_path.glob(f"{second}-*.npz"))
    resumed = run(source, quantile=0.05, cache=_cache(tmp_path, source), budget=budget)
    assert_same(fresh, resumed)
    other = run(source, quantile=0.1, cache=_cache(tmp_path, source), budget=budget)
    assert not np.array_equal(other.thresholds, fresh.thresholds)  # new key, new tallies


class Planted(nn.Module):
    """Unit 0 fires on red pixels, unit 1 on green; unit 2 follows the blue noise.
    Plain Flax: the tap at ``conv`` is the convolution's (pre-ReLU) output."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(3, (1, 1), name="conv")(x))
        return h.mean(axis=(1, 2))


def planted_spec(params):
    return ModelSpec.from_linen(Planted(), params, kind="classifier", input_size=(16, 16),
                                layers={"conv": "conv"})


def planted_world(n=12, size=16, seed=0):
    rng = np.random.default_rng(seed)
    seg = np.ones((n, 2, size, size), np.int32)  # layer 0: objects (sky); layer 1: material
    seg[:, 1] = 0
    for i in range(n):
        y, x = rng.integers(0, size - 5, 2)
        seg[i, 0, y:y + 5, x:x + 5] = 2  # tree
        y, x = rng.integers(0, size - 4, 2)
        seg[i, 0, y:y + 4, x:x + 4] = 3  # door, drawn over trees
        seg[i, 1, :, : rng.integers(2, size)] = 4  # brick on the left
    image = np.stack([seg[:, 0] == 3, seg[:, 0] == 2,
                      rng.random((n, size, size)) * 0.5], axis=-1).astype(np.float32)
    return ArraySource(image=image, seg=seg)


def test_planted_units_are_labelled_with_their_concepts():
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    kernel[0, 0, 0, 0] = kernel[0, 0, 1, 1] = kernel[0, 0, 2, 2] = 1.0
    params = {"conv": {"kernel": jnp.asarray(kernel), "bias": jnp.array([-0.5, -0.5, 0.0])}}
    spec = planted_spec(params)
    planted_compute = spec_compute(spec, "conv", lambda batch, images: batch["seg"])
    source = planted_world()
    result = dissect(planted_compute, source, LABELS, quantile=0.12, batch_size=5,
                     progress=False, topk=2, params=spec.params)
    assert result.best_label[0] == LABELS.index("door") and result.best_iou[0] >= 0.99
    assert result.best_label[1] == LABELS.index("tree") and result.best_iou[1] >= 0.99
    assert result.unit_label(0) == "door" and result.labelled[:2].all()
    record = json.loads(json.dumps(result.to_json()))
    assert record["units"][0]["label"] == "door" and record["units"][1]["category"] == "object"
    assert {"unit": 0, "label": 3, "iou": result.best_iou[0]} in record["pairs"]


def test_result_round_trips_and_bad_arguments(tmp_path):
    source = random_source(n=5, seed=3)
    result = run(source, quantile=0.1, levels=(0.02,))
    result.save(str(tmp_path / "r.npz"))
    assert_same(result, DissectResult.load(str(tmp_path / "r.npz")))
    with pytest.raises(ValueError, match="quantile level"):
        run(source, quantile=1.5)
    with pytest.raises(ValueError, match="upsample gives"):
        run(source, upsample=Upsampler.plain((6, 6), (10, 10)))
    with pytest.raises(TypeError, match="LabelSet"):
        dissect(compute, source, ["a"], progress=False)


def test_each_pass_traces_compute_once(monkeypatch):
    traces = []

    def counting(batch):
        traces.append(batch["acts"].shape)
        return compute(batch)

    source = random_source(n=23, seed=4)  # 5 batches of 5, the last one short (padded)
    dissect(counting, source, LABELS, upsample=UP, batch_size=5, progress=False,
            devices=jax.local_devices()[:1])
    assert len(traces) == 2  # shape probe, the one pass
    traces.clear()
    dissect(counting, source, LABELS, upsample=UP, batch_size=5, progress=False,
            devices=jax.local_devices()[:1], budget=8)
    assert len(traces) == 2  # shape probe, one capture the four passes read
    traces.clear()
    monkeypatch.setenv(activations.ENV, "off")
    dissect(counting, source, LABELS, upsample=UP, batch_size=5, progress=False,
            devices=jax.local_devices()[:1], budget=8)
    assert len(traces) == 5  # shape probe, three radix passes, IoU pass


def test_params_are_step_arguments_not_constants():
    """Weights passed as ``params`` reach the compiled step as an argument, so the
    same results come without folding them into the program."""
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    kernel[0, 0, 0, 0] = kernel[0, 0, 1, 1] = kernel[0, 0, 2, 2] = 1.0
    params = {"conv": {"kernel": jnp.asarray(kernel), "bias": jnp.array([-0.5, -0.5, 0.0])}}
    spec = planted_spec(params)
    compute = spec_compute(spec, "conv", lambda batch, images: batch["seg"])
    source = planted_world()
    seen = []

    def traced(batch, p):
        seen.append(type(p["params"]["conv"]["kernel"]))
        return compute(batch, p)

    with_arg = dissect(traced, source, LABELS, quantile=0.12, batch_size=5,
                       progress=False, topk=2, params=spec.params)
    closed = dissect(lambda batch: compute(batch, spec.params), source, LABELS, quantile=0.12,
                     batch_size=5, progress=False, topk=2)
    assert all(issubclass(t, jax.core.Tracer) for t in seen)
    np.testing.assert_array_equal(with_arg.iou, closed.iou)
    np.testing.assert_array_equal(with_arg.thresholds, closed.thresholds)


def test_default_budget_takes_one_pass_when_the_buffer_is_small():
    from jaxdissect.experiments.dissect import ONE_PASS_MEMORY, auto_budget
    assert auto_budget((0.01,), 1000 * 56 * 56, 512, 2) == 31360  # ceil(0.01 n) up to 128
    assert 512 * 31360 * 4 * 3 <= ONE_PASS_MEMORY
    assert auto_budget((0.01,), 10000 * 56 * 56, 512, 4) == 4096  # 3 GB: radix passes
    traces = []

    def counting(batch):
        traces.append(1)
        return compute(batch)

    dissect(counting, random_source(n=9, seed=5), LABELS, upsample=UP, batch_size=5,
            progress=False)
    assert len(traces) == 2  # shape probe + one pass, with no budget given


class CountingSource(ArraySource):
    def __init__(self, **arrays):
        super().__init__(**arrays)
        self.reads = 0

    def batch(self, start, stop):
        self.reads += 1
        return super().batch(start, stop)


@pytest.mark.slow
def test_cache_is_keyed_by_weights_data_and_settings(tmp_path):
    """The README's ``dissect(..., params=..., cache_key=...)``: the same inputs reuse
    the cache; changed weights, data or settings give new results, never the old."""
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    kernel[0, 0, 0, 0] = kernel[0, 0, 1, 1] = kernel[0, 0, 2, 2] = 1.0
    params = {"conv": {"kernel": jnp.asarray(kernel), "bias": jnp.array([-0.5, -0.5, 0.0])}}
    planted = spec_compute(planted_spec(params), "conv", lambda batch, images: batch["seg"])
    world = planted_world()

    def go(p, source, topk=2):
        return dissect(planted, source, LABELS, quantile=0.12, batch_size=5, progress=False,
                       topk=topk, params={"params": p},
                       cache=run_cache(str(tmp_path), model="planted", layer="conv",
                                       data=source, segmenter="truth"))

    first = go(params, CountingSource(**world.arrays))
    again = CountingSource(**world.arrays)
    assert_same(first, go(jax.tree_util.tree_map(jnp.array, params), again))
    assert again.reads == 1  # the shape probe only: every pass came from the cache
    swapped = {"conv": {"kernel": jnp.asarray(kernel[..., ::-1]), "bias": params["conv"]["bias"]}}
    fresh = dissect(planted, world, LABELS, quantile=0.12, batch_size=5, progress=False,
                    topk=2, params={"params": swapped})
    changed = go(swapped, CountingSource(**world.arrays))
    assert_same(changed, fresh)
    assert changed.best_label[0] != first.best_label[0]
    other_data = planted_world(seed=1)
    assert_same(go(params, other_data), dissect(planted, other_data, LABELS, quantile=0.12,
                                                batch_size=5, progress=False, topk=2,
                                                params={"params": params}))
    assert go(params, world, topk=1).topk_images.shape[1] == 1  # a setting: a new tally
