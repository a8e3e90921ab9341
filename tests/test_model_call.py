"""Flax models as they are written (tests/support/flax_models.py): call arguments without a
default (``apply_kwargs``), dict / tuple returns (``output=``), NNX models left in
training mode and holding RNG state, and fully connected layers ablated and edited;
each against the same model run by hand in plain Flax / JAX."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdissect.edits import Edit, zero_units
from jaxdissect.experiments import ablate
from jaxdissect.runtime.fingerprint import fingerprint
from jaxdissect.spec import ModelSpec
from jaxdissect.world import WorldSource
from tests.support import flax_models as fm
from tests.support.user_models import attack_classes


def images(n=6, seed=0):
    return np.random.default_rng(seed).random((n, 32, 32, 3), dtype=np.float32)


# --------------------------------------------------------------- linen call arguments

def test_linen_train_argument_and_dict_output():
    spec, x = fm.train_flag_classifier(), images()
    v = fm.train_flag_variables()
    want = fm.TrainFlagCNN().apply(v, x, train=False)
    logits, acts = spec.run(spec.params, x, capture=("fc1", "features"))
    np.testing.assert_allclose(logits, want["logits"], rtol=1e-6)
    np.testing.assert_allclose(acts["fc1"], want["embedding"], rtol=1e-6)
    # train=True (batch statistics, dropout) gives other logits: the argument matters
    trained, _ = fm.TrainFlagCNN().apply(v, x, train=True, mutable=["batch_stats"],
                                         rngs={"dropout": jax.random.key(0)})
    assert np.abs(np.asarray(trained["logits"]) - np.asarray(want["logits"])).max() > 1e-3
    assert "fc1" in spec.module_paths() and spec.num_classes == 11


def test_linen_tuple_output_by_index_and_function():
    spec, x = fm.tuple_classifier(), images()
    want = fm.TupleCNN().apply(spec.params, x)[1]
    np.testing.assert_allclose(spec.run(spec.params, x)[0], want, rtol=1e-6)
    by_fn = ModelSpec.from_linen(fm.TupleCNN(), spec.params, output=lambda o: o[-1],
                                 **fm._fields("t"))
    np.testing.assert_allclose(by_fn.run(by_fn.params, x)[0], want, rtol=1e-6)


def test_generator_dict_output_gives_images():
    spec = fm.dict_generator()
    z = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    out, acts = spec.run(spec.params, z, capture="block")
    want = fm.DictGenerator().apply(spec.params, z, train=False)["image"]
    np.testing.assert_allclose(out, want, rtol=1e-6)
    assert acts["block"].shape == (3, 8, 8, 12)


def test_bad_output_and_apply_kwargs_are_clear_errors():
    v = fm.train_flag_variables()
    x = images(1)
    bad_key = ModelSpec.from_linen(fm.TrainFlagCNN(), v, apply_kwargs={"train": False},
                                   output="probs", **fm._fields("k"))
    with pytest.raises(KeyError, match=r"output='probs'.*\['logits', 'embedding'\]"):
        bad_key.run(bad_key.params, x)
    tup = fm.tuple_classifier()
    bad_index = tup.replace(call=ModelSpec.from_linen(
        fm.TupleCNN(), tup.params, output=2, **fm._fields("i")).call)
    with pytest.raises(IndexError, match="returns 2 values"):
        bad_index.run(bad_index.params, x)
    with pytest.raises(TypeError, match="key .* index .* function"):
        ModelSpec.from_linen(fm.TupleCNN(), tup.params, output=1.5, **fm._fields("f"))
    with pytest.raises(ValueError, match="clash"):
        ModelSpec.from_linen(fm.TupleCNN(), tup.params, apply_kwargs={"edits": 1},
                             **fm._fields("c"))


# ------------------------------------------------------------------------ NNX

def nnx_by_hand(model, x, fc1_edit=None):
    """NNXNet in eval mode by hand: BatchNorm on its running statistics, no dropout."""
    f = model.features(x)
    bn = model.bn
    mean, var, scale, bias = (jnp.asarray(v[...]).reshape(1, 1, 1, -1)
                              for v in (bn.mean, bn.var, bn.scale, bn.bias))
    h = (f - mean) / jnp.sqrt(var + bn.epsilon) * scale + bias
    fc1 = model.fc1(jax.nn.relu(h).mean(axis=(1, 2)))
    if fc1_edit is not None:
        fc1 = fc1_edit(fc1)
    return model.head(jax.nn.relu(fc1)), fc1


def test_nnx_spec_runs_an_eval_copy_and_leaves_the_model_alone():
    model, x = fm.nnx_model(), images()
    spec = ModelSpec.from_nnx(model, output=0, **fm._fields("nnx"))
    logits, acts = jax.jit(lambda p: spec.run(p, x, capture="fc1"))(spec.params)
    want, want_fc1 = nnx_by_hand(model, x)
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts["fc1"], want_fc1, rtol=1e-5, atol=1e-6)
    # the user's model is still in training mode, and that mode gives other logits
    assert model.bn.use_running_average is False and model.drop.deterministic is False
    train_logits = nnx.clone(model)(x)[0]
    assert np.abs(np.asarray(train_logits) - np.asarray(want)).max() > 1e-3
    assert spec.module_paths() == ["bn", "drop", "fc1", "features", "head"]
    spec.check_layer("bn")                   # a module path, not a research name
    raw = ModelSpec.from_nnx(model, output=0, eval_mode=False, **fm._fields("raw"))
    bn_only = raw.run(raw.params, x)[0]      # still training mode: batch statistics
    assert np.abs(np.asarray(bn_only) - np.asarray(want)).max() > 1e-3


def test_rng_state_fingerprints():
    spec = fm.nnx_classifier()
    keys = [p for p, leaf in jax.tree_util.tree_leaves_with_path(spec.params)
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)]
    assert keys, "the NNX model holds no RNG key: the test would not test it"
    assert spec.fingerprint == fm.nnx_classifier().fingerprint
    k0, k1 = jax.random.key(0), jax.random.key(1)
    assert fingerprint({"k": k0}) == fingerprint({"k": jax.random.key(0)})
    assert fingerprint({"k": k0}) != fingerprint({"k": k1})
    assert fingerprint({"k": k0}) != fingerprint({"k": jax.random.key_data(k0)})


# ----------------------------------------------------------- fully connected layers

def test_map_layout_edit_applies_to_a_fully_connected_output():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(5, 16)), jnp.float32)
    alpha = np.zeros((16,), np.float32)
    alpha[[2, 9]] = 1
    value = np.arange(16, dtype=np.float32)
    want = np.where(alpha > 0, value, np.asarray(x))
    for a, v in [(alpha, value), (alpha.reshape(1, 1, 1, 16), value.reshape(1, 1, 1, 16)),
                 (alpha.reshape(1, 1, 16), value)]:
        np.testing.assert_allclose(Edit(jnp.asarray(a), jnp.asarray(v))(x), want)
    per_image = np.broadcast_to(alpha, (5, 1, 1, 16))
    np.testing.assert_allclose(Edit(jnp.asarray(per_image), jnp.asarray(value))(x), want)
    with pytest.raises(ValueError, match="fully connected"):
        Edit(jnp.ones((1, 2, 2, 16)), jnp.zeros(16))(x)
    spec = fm.tuple_classifier()
    with pytest.raises(ValueError, match=r"edit at 'fc1'.*\(6, 16\): .*fully connected"):
        spec.run(spec.params, images(), edits={"fc1": Edit(jnp.ones((1, 2, 2, 16)),
                                                          jnp.zeros(16))})


@pytest.mark.parametrize("factory", [fm.train_flag_classifier, fm.tuple_classifier,
                                     fm.nnx_classifier])
def test_fc_single_unit_ablation_equals_hand_edits(factory):
    spec = factory()
    source = WorldSource(12, seed=6, size=32)
    split = ablate.split_classifier(spec, "fc1")
    counts = ablate.ablation_masks_counts(split, source, np.eye(16), 11, batch_size=6,
                                          chunk=4, progress=False)
    b = source.batch(0, 12)
    x = jnp.asarray(b["image"])
    for u in (0, 7, 15):
        def edit(fc1, u=u):
            return fc1.at[:, u].set(0)
        if factory is fm.nnx_classifier:
            logits = nnx_by_hand(fm.nnx_model(), x, edit)[0]
        else:
            fc1 = spec.activations(spec.params, x, "fc1")
            head = spec.params["params"]["head"]
            logits = nn.Dense(11).apply({"params": head}, jax.nn.relu(edit(fc1)))
        pred = np.asarray(logits).argmax(1)
        np.testing.assert_array_equal(counts["pred"][u], np.bincount(pred, minlength=11))
    # and with every unit but one removed, through the plain edit (no shortcut)
    keep = 1 - np.eye(16, dtype=np.float32)[:2]
    counts = ablate.ablation_masks_counts(split, source, keep, 11, batch_size=6,
                                          progress=False)
    out = spec.run(spec.params, x, edits={"fc1": zero_units(np.arange(1, 16), 16)})[0]
    np.testing.assert_array_equal(counts["pred"][0],
                                  np.bincount(np.asarray(out).argmax(1), minlength=11))


# -------------------------------------------------------------------- the CLI

@pytest.mark.slow
def test_cli_every_classifier_command_on_flax_models_as_written(tmp_path):
    """The NNX model with BatchNorm and a Dropout RNG (not put in eval mode), dissected
    and ablated at its fully connected layer; the linen model with ``train`` and a dict
    return ablated and attacked."""
    import json

    from jaxdissect import cli
    model = "py:tests.support.flax_models:nnx_classifier"
    out = tmp_path / "d"
    assert cli.main(["dissect", "--model", model, "--layer", "fc1", "--num-images", "12",
                     "--out", str(out), "--no-progress", "--batch-size", "6",
                     "--seg-downsample", "2"]) == 0
    assert np.load(out / "iou.npy").shape[0] == 16
    out = tmp_path / "a"
    assert cli.main(["ablate", "--model", model, "--layer", "fc1", "--num-images", "12",
                     "--ks", "1", "--out", str(out), "--no-progress", "--batch-size",
                     "6"]) == 0
    res = json.load(open(out / "ablate" / "ablation.json"))
    assert "fc1" in json.dumps(res)
    source, target = attack_classes(fm.train_flag_classifier(), 24)
    out = tmp_path / "attack"
    assert cli.main(["attack", "--model", "py:tests.support.flax_models:train_flag_classifier",
                     "--layer", "fc1", "--source", source, "--target", target,
                     "--num-images", "1", "--search-images", "24", "--steps", "5",
                     "--rank-images", "12", "--dissect-images", "0", "--out", str(out),
                     "--no-progress"]) == 0


@pytest.mark.slow
def test_cli_generator_commands_on_a_dict_returning_generator(tmp_path):
    from jaxdissect import cli
    gen = "py:tests.support.flax_models:dict_generator"
    seg = "py:tests.support.tiny_nets:TinySegmenter"
    out = tmp_path / "intervene"
    assert cli.main(["intervene", "--model", gen, "--segmenter", seg, "--num-samples", "8",
                     "--max-remove", "2", "--insert-units", "2", "--remove", "green",
                     "--insert", "blue", "--batch-size", "4", "--out", str(out),
                     "--no-progress"]) == 0
    out = tmp_path / "paint"
    assert cli.main(["paint", "--model", gen, "--segmenter", seg, "--num-samples", "8",
                     "--edit", "green:off:0,0,1,1", "--num-z", "2", "--units", "2",
                     "--out", str(out), "--no-progress"]) == 0
    assert (out / "paint.html").is_file()
