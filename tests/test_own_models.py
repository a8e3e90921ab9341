"""Bring your own model: plain linen and NNX models (tests/support/user_models.py, no jaxdissect
import inside them) dissected, ablated, edited and attacked through the Python API and
the CLI's ``--model py:...``, against the same models run and edited by hand in plain
JAX and NumPy."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdissect import cli, taps
from jaxdissect.edits import Edit, zero_units
from jaxdissect.experiments import ablate, attack, intervene
from jaxdissect.experiments.dissect import dissect, spec_compute
from jaxdissect.stats.upsample import Upsampler
from jaxdissect.world import WorldSource
from jaxdissect.world.vocab import LABELS
from tests.experiments.test_dissect import numpy_thresholds_iou
from tests.support import user_models as um

# ------------------------------------------------------------- hand-written oracles

def linen_by_hand(params, x, features_edit=None):
    """LinenCNN run layer by layer with plain Flax modules, no taps."""
    h = jax.nn.relu(nn.Conv(8, (3, 3), strides=2).apply({"params": params["stem"]}, x))
    f = nn.Conv(12, (3, 3), strides=2).apply({"params": params["features"]}, h)
    if features_edit is not None:
        f = features_edit(f)
    logits = nn.Dense(11).apply({"params": params["head"]}, jax.nn.relu(f).mean((1, 2)))
    return logits, f


def nnx_by_hand(model, x, features_edit=None):
    f = model.features(nnx.relu(model.stem(x)))
    if features_edit is not None:
        f = features_edit(f)
    return model.head(nnx.relu(f).mean((1, 2))), f


def images(n=6, seed=0):
    return np.random.default_rng(seed).random((n, 32, 32, 3), dtype=np.float32)


# ----------------------------------------------------------------------- taps

def test_linen_capture_and_edit_equal_hand_run():
    spec, x = um.linen_classifier(), images()
    params = spec.params["params"]
    logits, acts = spec.run(spec.params, x, capture=("features", "stem"))
    want_logits, want_f = linen_by_hand(params, x)
    np.testing.assert_allclose(acts["features"], want_f, rtol=1e-6)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-6)
    edit = Edit(alpha=jnp.eye(12)[3], value=jnp.full((12,), 2.5))
    got, acts = spec.run(spec.params, x, capture="features", edits={"features": edit})
    want, want_f = linen_by_hand(params, x, lambda f: f.at[..., 3].set(2.5))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts["features"], want_f, rtol=1e-6)


def test_nnx_capture_and_edit_equal_hand_run():
    spec, x = um.nnx_classifier(), images()
    model = nnx.merge(spec.module, spec.params)
    logits, acts = spec.run(spec.params, x, capture=("features",))
    want_logits, want_f = nnx_by_hand(model, x)
    np.testing.assert_allclose(acts["features"], want_f, rtol=1e-6)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-6)
    got = jax.jit(lambda p: spec.run(p, x, edits={"features": zero_units([1, 4], 12)})[0])(
        spec.params)
    want, _ = nnx_by_hand(model, x, lambda f: f.at[..., [1, 4]].set(0))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match="no submodule"):
        spec.run(spec.params, x, capture="nope")


def test_vmap_and_grad_through_edits():
    spec, x = um.linen_classifier(), images(3)
    stack = Edit(alpha=jnp.eye(12)[:5], value=jnp.zeros((5, 12)))
    one = jax.jit(lambda e: spec.run(spec.params, x, edits={"features": e})[0])
    batched = jax.vmap(one)(stack)
    for u in range(5):
        np.testing.assert_allclose(batched[u], one(zero_units([u], 12)), rtol=1e-5, atol=1e-7)
    # d logits / d value of an edit that sets unit 2 everywhere: the head's weight on
    # unit 2 (the mean over positions of a constant is the constant)
    head = spec.params["params"]["head"]["kernel"]
    g = jax.grad(lambda v: spec.run(spec.params, x, edits={"features": Edit(
        jnp.eye(12)[2], v)})[0][:, 0].sum())(jnp.ones(12))
    np.testing.assert_allclose(g[2], len(x) * head[2, 0], rtol=1e-5)
    assert np.all(np.asarray(g)[np.arange(12) != 2] == 0)


def test_feed_compiles_the_head_away():
    """Under jit, the layers only a fed module consumed are dead code: the compiled
    program of a run fed at ``features`` has one convolution fewer."""
    spec, x = um.linen_classifier(), images(2)
    f = spec.activations(spec.params, x, "features")
    full = jax.jit(lambda p, x: spec.run(p, x)[0]).lower(spec.params, x).compile().as_text()
    fed = jax.jit(lambda p, x, f: spec.run(p, x, feed={"features": f})[0]).lower(
        spec.params, x, f).compile().as_text()
    assert full.count("convolution(") == 2 and fed.count("convolution(") == 0
    np.testing.assert_allclose(spec.resume(spec.params, "features", f),
                               spec.run(spec.params, x)[0], rtol=1e-6)


def test_subclass_calling_super_is_tapped_once_and_errors_name_paths():
    class ReluConv(nn.Conv):
        def __call__(self, x):
            return nn.relu(super().__call__(x))

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            c = ReluConv(3, (1, 1), name="c")
            return c(c(x))          # the same module twice

    class Once(nn.Module):
        @nn.compact
        def __call__(self, x):
            return ReluConv(3, (1, 1), name="c")(x)

    x = -jnp.ones((1, 2, 2, 3))
    v = Once().init(jax.random.key(0), x)
    _, acts = taps.run(Once().apply, v, x, capture="c")
    assert float(acts["c"].min()) >= 0           # the post-ReLU output, tapped once
    v2 = Net().init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="more than once"):
        taps.run(Net().apply, v2, x, capture="c")
    with pytest.raises(KeyError, match=r"no module at \['d'\].*'c'"):
        taps.run(Once().apply, v, x, capture="d")


# ---------------------------------------------------------- experiments, API

def numpy_dissection(acts_up, seg, q):
    return numpy_thresholds_iou(acts_up, seg, q, len(LABELS))


@pytest.mark.parametrize("factory", [um.linen_classifier, um.nnx_classifier])
def test_dissect_own_model_equals_numpy(factory):
    spec = factory()
    source = WorldSource(12, seed=5, size=32)
    up = Upsampler.plain((8, 8), (32, 32))
    compute = spec_compute(spec, "features", lambda batch, images: batch["seg"])
    res = dissect(compute, source, LABELS, upsample=up, quantile=0.02, batch_size=5,
                  progress=False, params=spec.params)
    b = source.batch(0, 12)
    if factory is um.linen_classifier:
        f = linen_by_hand(spec.params["params"], b["image"])[1]
    else:
        f = nnx_by_hand(nnx.merge(spec.module, spec.params), b["image"])[1]
    t, iou = numpy_dissection(np.asarray(up(jnp.asarray(f))), b["seg"], 0.02)
    np.testing.assert_array_equal(res.thresholds, t)
    np.testing.assert_allclose(res.iou, iou, rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("factory", [um.linen_classifier, um.nnx_classifier])
def test_single_unit_ablation_sweep_equals_hand_edits(factory):
    spec = factory()
    source = WorldSource(22, seed=6, size=32)
    split = ablate.split_classifier(spec, "features")
    counts = ablate.ablation_masks_counts(split, source, np.eye(12), 11, batch_size=8,
                                          chunk=5, progress=False)
    b = source.batch(0, 22)
    for u in (0, 5, 11):
        edit = lambda f, u=u: f.at[..., u].set(0)  # noqa: E731
        if factory is um.linen_classifier:
            logits = linen_by_hand(spec.params["params"], b["image"], edit)[0]
        else:
            logits = nnx_by_hand(nnx.merge(spec.module, spec.params), b["image"], edit)[0]
        pred = np.asarray(logits).argmax(1)
        np.testing.assert_array_equal(counts["pred"][u], np.bincount(pred, minlength=11))
        np.testing.assert_array_equal(
            counts["correct"][u], np.bincount(pred[pred == b["label"]], minlength=11))


def generator_by_hand(params, z, block_edit=None):
    h = nn.Dense(256).apply({"params": params["fc"]}, z).reshape(len(z), 4, 4, 16)
    h = jnp.repeat(jnp.repeat(jax.nn.leaky_relu(h, 0.2), 2, 1), 2, 2)
    h = nn.Conv(12, (3, 3)).apply({"params": params["block"]}, h)
    if block_edit is not None:
        h = block_edit(h)
    h = jnp.repeat(jnp.repeat(jax.nn.leaky_relu(h, 0.2), 2, 1), 2, 2)
    return jax.nn.sigmoid(nn.Conv(3, (3, 3)).apply({"params": params["out"]}, h))


@pytest.mark.slow
def test_generator_removal_and_insertion_edits_equal_hand_edits():
    spec = um.linen_generator()
    z = np.random.default_rng(3).normal(size=(4, 8)).astype(np.float32)
    split = intervene.split_generator(spec, "block")
    acts = split.head(spec.params, {"z": z})
    params = spec.params["params"]
    removed = split.tail(spec.params, acts, zero_units([0, 7], 12))
    np.testing.assert_allclose(removed, generator_by_hand(
        params, z, lambda h: h.at[..., [0, 7]].set(0)), rtol=1e-5, atol=1e-6)
    region = np.zeros((8, 8), np.float32)
    region[2:4, 5:7] = 1
    inserted = split.tail(spec.params, acts, Edit(
        alpha=jnp.asarray(region)[..., None] * jnp.eye(12)[3][None, None, :],
        value=jnp.full((12,), 4.0)))
    want = generator_by_hand(params, z, lambda h: h.at[:, 2:4, 5:7, 3].set(4.0))
    np.testing.assert_allclose(inserted, want, rtol=1e-5, atol=1e-6)


def test_attack_on_own_model_moves_the_units_measured_by_hand():
    spec = um.linen_classifier()
    x = images(3, seed=9)
    logits_fn = um_logits
    pred = np.asarray(logits_fn(spec.params, x)).argmax(1)
    target = (pred + 1) % 11
    res = attack.cw_attack(logits_fn, spec.params, x, target, steps=30, c=50.0)
    adv = np.asarray(res.adversarial)
    shift = attack.unit_shift(um_features, spec.params, x, adv, batch_size=2)
    clean = np.asarray(linen_by_hand(spec.params["params"], x)[1], np.float64)
    moved = np.asarray(linen_by_hand(spec.params["params"], jnp.asarray(adv))[1], np.float64)
    np.testing.assert_allclose(shift.clean, clean.mean((0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(shift.delta, moved.mean((0, 1, 2)) - clean.mean((0, 1, 2)),
                               rtol=1e-4, atol=1e-5)


_SPEC = um.linen_classifier()


def um_logits(params, x):
    return _SPEC.run(params, x)[0]


def um_features(params, x):
    return _SPEC.activations(params, x, "features")


# -------------------------------------------------------------------- the CLI

@pytest.mark.slow
@pytest.mark.parametrize("factory", ["linen_classifier", "nnx_classifier"])
def test_cli_dissect_and_ablate_own_model(tmp_path, factory):
    model = f"py:tests.support.user_models:{factory}"
    out = tmp_path / "d"
    assert cli.main(["dissect", "--model", model, "--num-images", "22", "--out", str(out),
                     "--no-progress", "--batch-size", "8", "--seg-downsample", "1"]) == 0
    spec = getattr(um, factory)()
    source = WorldSource(22, seed=4, size=32)   # the CLI's world val seed
    b = source.batch(0, 22)
    f = np.asarray(spec.activations(spec.params, b["image"], "features"))
    _, iou = numpy_dissection(np.asarray(Upsampler.plain((8, 8), (32, 32))(jnp.asarray(f))),
                              b["seg"], 0.01)
    np.testing.assert_allclose(np.load(out / "iou.npy"), iou, rtol=1e-12)
    out = tmp_path / "a"
    assert cli.main(["ablate", "--model", model, "--num-images", "22", "--ks", "1,2",
                     "--out", str(out), "--no-progress", "--batch-size", "8"]) == 0
    assert (out / "ablate" / "ablation.json").is_file()


@pytest.mark.slow
def test_cli_attack_intervene_paint_own_models(tmp_path):
    source, target = um.attack_classes(um.linen_classifier(), 44)
    out = tmp_path / "attack"
    assert cli.main(["attack", "--model", "py:tests.support.user_models:linen_classifier",
                     "--source", source, "--target", target, "--num-images", "1",
                     "--search-images", "44", "--steps", "20", "--rank-images", "22",
                     "--dissect-images", "0", "--out", str(out), "--no-progress"]) == 0
    assert (out / "attack.html").is_file()
    gen = "py:tests.support.user_models:linen_generator"
    seg = "py:tests.support.tiny_nets:TinySegmenter"
    out = tmp_path / "intervene"
    assert cli.main(["intervene", "--model", gen, "--segmenter", seg, "--num-samples", "12",
                     "--max-remove", "2", "--insert-units", "2", "--remove", "green",
                     "--insert", "blue", "--batch-size", "6", "--out", str(out),
                     "--no-progress"]) == 0
    res = json.load(open(out / "intervene" / "intervention.json"))
    assert "green" in json.dumps(res)
    out = tmp_path / "paint"
    assert cli.main(["paint", "--model", gen, "--segmenter", seg, "--num-samples", "12",
                     "--edit", "green:off:0,0,1,1", "--num-z", "2", "--units", "2",
                     "--out", str(out), "--no-progress"]) == 0
    assert (out / "paint.html").is_file()


def test_bad_user_model_specs_are_clear_errors(capsys):
    assert cli.main(["dissect", "--model", "py:tests.support.user_models:nothing_here"]) == 2
    assert "has no 'nothing_here'" in capsys.readouterr().err
    assert cli.main(["dissect", "--model", "py:tests.support.user_models:LinenCNN"]) == 2
    assert "not a jaxdissect.spec.ModelSpec" in capsys.readouterr().err
    assert cli.main(["dissect", "--model", "py:tests.support.user_models:linen_classifier",
                     "--layer", "conv9"]) == 2
    assert "no layer 'conv9'" in capsys.readouterr().err
