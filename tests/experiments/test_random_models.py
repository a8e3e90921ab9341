"""Randomly initialised models, written here in plain Flax, through the experiments
that state the paper's findings (classifier ablation, the attack, generator removal
and insertion): a model that has learnt nothing supports no finding, and every
finding says why it does not apply or does not hold. Every interval a finding
states lies within its statistic's range."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.experiments import ablate, attack, intervene
from jaxdissect.experiments.dissect import dissect, spec_compute
from jaxdissect.experiments.label_significance import significance
from jaxdissect.spec import ModelSpec
from jaxdissect.world import WorldSource
from jaxdissect.world.scenes import CLASS_NAMES
from tests.support.tiny_nets import SEG_LABELS, ArraySource, TinySegmenter

UNITS = 16


class RandomClassifier(nn.Module):
    @nn.compact
    def __call__(self, x):                                                # 32x32
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="stem")(x))        # 16x16
        x = nn.relu(nn.Conv(UNITS, (3, 3), strides=2, name="features")(x))  # 8x8
        return nn.Dense(len(CLASS_NAMES), name="head")(x.mean(axis=(1, 2)))


class RandomGenerator(nn.Module):
    @nn.compact
    def __call__(self, z):
        h = nn.Dense(4 * 4 * 16, name="fc")(z).reshape(z.shape[0], 4, 4, 16)
        h = jnp.repeat(jnp.repeat(nn.leaky_relu(h, 0.2), 2, 1), 2, 2)
        h = nn.Conv(UNITS, (3, 3), name="block")(h)                       # 8x8
        h = jnp.repeat(jnp.repeat(nn.leaky_relu(h, 0.2), 2, 1), 2, 2)
        return jax.nn.sigmoid(nn.Conv(3, (3, 3), name="out")(h))         # 16x16


def classifier(seed=0):
    params = RandomClassifier().init(jax.random.key(seed), jnp.zeros((1, 32, 32, 3)))
    return ModelSpec.from_linen(RandomClassifier(), params, kind="classifier", name="random",
                                layers={"features": "features"}, default_layer="features",
                                input_size=(32, 32), class_names=tuple(CLASS_NAMES),
                                resize="stretch")


def generator(seed=0):
    params = RandomGenerator().init(jax.random.key(seed), jnp.zeros((1, 8)))
    return ModelSpec.from_linen(RandomGenerator(), params, kind="generator", name="random",
                                layers={"block": "block"}, default_layer="block", z_dim=8,
                                to_images=lambda x: x)


def check(findings, count):
    assert len(findings) == count
    for f in findings:
        assert not f.holds, f.plain()
        assert f.applies is False or "does not hold" in f.plain()
        assert f.reason or f.applies, f.plain()
        assert f.in_bounds(), f.plain()
        lo, hi = f.bounds
        for v in (f.low, f.high):
            assert math.isnan(v) or lo <= v <= hi


@pytest.mark.slow
def test_random_classifier_ablation_and_attack_support_nothing():
    spec = classifier()
    train, val = WorldSource(44, seed=1, size=32), WorldSource(66, seed=4, size=32)
    split = ablate.split_classifier(spec, "features")
    res = ablate.run_experiment(split, train, val, UNITS, len(CLASS_NAMES), ks=(1, 4),
                                replicates=100, batch_size=22, progress=False)
    findings = res.findings(k=4)
    print(*(f.plain() for f in findings), sep="\n")
    check(findings, 2)
    assert all("not above chance" in f.reason for f in findings)
    lo, hi = res.summary(k=4)["mean_baseline_ba_ci99"]
    assert 0 <= lo <= 0.5 <= hi <= 1
    # the attack: images of a class the model calls right at least once
    b = val.batch(0, val.num_examples)
    predict = jax.jit(lambda x: jnp.argmax(spec.run(spec.params, x)[0], -1))
    pred = np.asarray(predict(jnp.asarray(b["image"], jnp.float32)))
    right = pred == b["label"]
    src = int(np.bincount(b["label"][right]).argmax())
    tgt = (src + 1) % len(CLASS_NAMES)
    images = jnp.asarray(b["image"][right & (b["label"] == src)][:3], jnp.float32)

    def logits(p, x):
        return spec.run(p, x)[0]

    def features(p, x):
        return spec.activations(p, x, "features")

    cw = attack.cw_attack(logits, spec.params, images, tgt, steps=10, c=50.0)
    shift = attack.unit_shift(features, spec.params, images, np.asarray(cw.adversarial))
    ranking = attack.importance_ranking(split, train, UNITS, len(CLASS_NAMES),
                                        batch_size=22, progress=False)
    n = len(images)
    result = attack.AttackResult(
        model="random", layer="features", source_class=CLASS_NAMES[src],
        target_class=CLASS_NAMES[tgt], source_index=src, target_index=tgt, steps=10,
        learning_rate=0.01, c=50.0, kappa=0.0, image_index=np.arange(n),
        success=np.asarray(cw.success), l2=np.asarray(cw.l2, np.float64),
        adversarial_class=("?",) * n, first_success=np.asarray(cw.first_success, np.int64),
        shift=shift, ranking=ranking, ranking_from="test", unit_labels=None, top=4,
        recognition=attack.recognition_counts(val, src, predict, 22))
    findings = result.findings()
    print(*(f.plain() for f in findings), sep="\n")
    check(findings, 5)
    assert all("does not recognise" in f.reason for f in findings)


def dissected_generator():
    """The random generator, its segmenter and 64 z samples, dissected at ``block`` with
    every unit's label tested: ``(spec, seg, source, dissection, significance)``."""
    spec, seg = generator(), TinySegmenter()
    z = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    source = ArraySource(z=z)
    compute = spec_compute(spec, "block", lambda batch, images: seg(images))
    res = dissect(compute, source, SEG_LABELS, quantile=0.01, levels=(0.005,), miniou=0.01,
                  batch_size=16, params=spec.params, progress=False)
    sig = significance(compute, source, res, params=spec.params, permutations=200,
                       replicates=50, batch_size=16, progress=False,
                       units=np.arange(UNITS))
    return spec, seg, source, res, sig


@pytest.mark.slow
def test_random_generator_removal_and_insertion_support_nothing(monkeypatch):
    spec, seg, source, res, sig = dissected_generator()
    assert np.all((0 <= sig.iou_low) & (sig.iou_high <= 1))
    significant = sig.significant_labels(UNITS, intervene.LABEL_FDR)
    print("significant labels:", significant, "p:", sig.p_value)
    monkeypatch.setitem(intervene.PAPER_CONTEXTS, "blue", (("red",), ("green", "dark")))
    split = intervene.split_generator(spec, "block")
    green, blue = SEG_LABELS.index("green"), SEG_LABELS.index("blue")
    result = intervene.run_experiment(
        split, seg, source, res.iou, SEG_LABELS, res.levels[0.005], remove_concepts=(green,),
        insert_concepts=(blue,), max_remove=4, insert_units=4, batch_size=16, chunk=8,
        progress=False, significant_labels=significant, replicates=100)
    findings = result.findings()
    print(*(f.plain() for f in findings), sep="\n")
    check(findings, 3)
    assert [f.kind for f in findings] == ["pre-registered", "pre-registered", "exploratory"]
