"""Passes past the one-pass budget read the layer's activations kept from one run of
the model: the model runs once (counted), results identical to re-running it, from
host memory or a disk file; the rule that places the store."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.experiments.dissect import dissect
from jaxdissect.runtime import activations
from jaxdissect.runtime.cache import run_cache
from tests.experiments.test_dissect import LABELS, UP, ArraySource, DyingSource, assert_same

KERNEL = np.random.default_rng(1).standard_normal((3, 3, 3, 5)).astype(np.float32)


def conv_source(n=22, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 12, 12, 3), dtype=np.float32)
    seg = rng.choice(5, size=(n, 2, 12, 12)).astype(np.int32)
    return ArraySource(image=images, seg=seg)


def counted_compute(seen):
    """A strided conv + ReLU to 6x6 (a real forward), recording the images it ran on."""
    def compute(batch, kernel):
        jax.debug.callback(lambda i: seen.extend(np.asarray(i).tolist()), batch["index"])
        acts = jax.lax.conv_general_dilated(batch["image"], kernel, (2, 2), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(acts), batch["seg"]
    return compute


def _cache(tmp_path, source):
    return run_cache(str(tmp_path), model="counted conv", layer="acts", data=source,
                     segmenter="truth")


def run(monkeypatch, choice, tmp_path=None, **kw):
    monkeypatch.setenv(activations.ENV, choice)
    seen = []
    source = conv_source()
    result = dissect(counted_compute(seen), source, LABELS, upsample=UP, quantile=0.04,
                     levels=(0.01,), batch_size=6, topk=3, budget=16, progress=False,
                     params=jnp.asarray(KERNEL),
                     cache=None if tmp_path is None else _cache(tmp_path, source), **kw)
    jax.effects_barrier()
    return result, seen, source.num_examples


@pytest.mark.slow
def test_the_model_runs_once_and_results_are_identical(monkeypatch, tmp_path):
    again, seen_off, n = run(monkeypatch, "off")
    # every pass ran the model over every image (the padding repeats the last one)
    assert sorted(set(seen_off)) == list(range(n)) and len(seen_off) >= 4 * n
    for choice in ("host", "disk"):
        stored, seen, _ = run(monkeypatch, choice, tmp_path / choice)
        assert sorted(set(seen)) == list(range(n)) and len(seen) < 2 * n, choice
        assert_same(again, stored)
        assert not [f for f in os.listdir(tmp_path / choice) if f.startswith("activations-")]


@pytest.mark.slow
def test_a_run_killed_while_capturing_leaves_nothing_and_reruns_identically(
        monkeypatch, tmp_path):
    monkeypatch.setenv(activations.ENV, "disk")
    fresh = run(monkeypatch, "disk")[0]
    source = conv_source()
    dying = DyingSource(2, **source.arrays)
    with pytest.raises(RuntimeError, match="killed"):
        dissect(counted_compute([]), dying, LABELS, upsample=UP, quantile=0.04, levels=(0.01,),
                batch_size=6, topk=3, budget=16, progress=False, params=jnp.asarray(KERNEL),
                cache=_cache(tmp_path, dying), checkpoint_every=1)
    assert not [f for f in os.listdir(tmp_path) if f.startswith("activations-")]
    again = run(monkeypatch, "disk", tmp_path)[0]
    assert_same(fresh, again)


def test_the_store_rule(monkeypatch, tmp_path):
    monkeypatch.setenv(activations.ENV, "auto")
    monkeypatch.setattr(activations, "available_memory", lambda: 1000)
    assert activations.place(500, str(tmp_path)) == "host"
    assert activations.place(501, str(tmp_path)) == "disk"
    free = activations.shutil.disk_usage(str(tmp_path)).free
    assert activations.place(free, str(tmp_path)) is None
    for forced in ("host", "disk"):
        monkeypatch.setenv(activations.ENV, forced)
        assert activations.place(10 ** 15) == forced
    monkeypatch.setenv(activations.ENV, "off")
    assert activations.place(1) is None
    monkeypatch.setenv(activations.ENV, "gpu")
    with pytest.raises(ValueError, match="JAXDISSECT_ACTIVATION_STORE='gpu'"):
        activations.place(1)
    assert activations.nbytes(10, (2, 2, 3), np.float32, (1, 4, 4), 100) == \
        10 * (12 * 4 + 16 * 2)
    assert activations.available_memory() >= 0


def test_a_stored_source_reads_only_its_slice():
    store = activations.StoredActivations(conv_source(), np.zeros((4, 1)), np.zeros((4, 1)),
                                          3, 7)
    assert store.batch(4, 6)["acts"].shape == (2, 1)
    with pytest.raises(IndexError, match="outside the stored 3..7"):
        store.batch(2, 5)
