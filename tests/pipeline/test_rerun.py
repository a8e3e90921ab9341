"""A finished run re-run into its folder runs no model at all: its sweeps, unit
thumbnails and intervention pictures are all read from the folder's caches, and every
file it writes is byte-identical to the first run's. Model applications are counted
where they execute (a callback compiled into every call of a shipped world model,
classifier, generator and segmenter), not where they are traced. The demo's second run
is counted in ``test_resume.py``, beside its sweeps."""

from __future__ import annotations

import dataclasses

import jax
import pytest

from jaxdissect.pipeline.ablation import run_ablate
from jaxdissect.pipeline.config import AblateConfig, DissectConfig, InterveneConfig
from jaxdissect.pipeline.dissection import run_dissect
from jaxdissect.pipeline.intervention import run_intervene
from tests.support.pipeline import assert_identical, counting_model_calls, written

pytestmark = pytest.mark.slow

RUNS = {
    "dissect": (run_dissect, DissectConfig(model="world", num_images=24, significance=True,
                                           permutations=20, batch_size=8, progress=False)),
    "ablate": (run_ablate, AblateConfig(model="world", num_images=24, train_images=16,
                                        ks=(1, 2), curve_classes=("0",), batch_size=8,
                                        progress=False)),
    "intervene": (run_intervene, InterveneConfig(
        model="world-generator", num_samples=16, sweep_samples=2, removal_samples=4,
        insertion_samples=2, max_remove=2, insert_units=2, batch_size=8,
        remove=("tree",), insert=("door",), progress=False)),
}


def test_counter_sees_a_model_run_inside_a_compiled_program(monkeypatch):
    """The counter itself: it counts a jitted call each time it runs, also when the
    program was compiled by an earlier call."""
    from jaxdissect.pipeline.resolve import load_model
    model = load_model("world")
    x = model.example_input_raw()
    f = jax.jit(lambda p, x: model.run(p, x)[0])
    with counting_model_calls(monkeypatch) as calls:
        f(model.params, x).block_until_ready()
        f(model.params, x).block_until_ready()
        jax.effects_barrier()
        assert calls == ["model", "model"]
        jax.eval_shape(f, model.params, x)   # a shape probe runs nothing
        jax.effects_barrier()
        assert len(calls) == 2


@pytest.mark.parametrize("name", sorted(RUNS))
def test_second_run_runs_no_model_and_writes_the_same_files(name, tmp_path, monkeypatch):
    run, cfg = RUNS[name]
    cfg = dataclasses.replace(cfg, out=str(tmp_path / name))
    with counting_model_calls(monkeypatch) as calls:
        run(cfg)
        jax.effects_barrier()
        assert "model" in calls
    first = written(tmp_path / name)
    with counting_model_calls(monkeypatch) as calls:
        run(cfg)
        jax.effects_barrier()
        assert calls == []
    assert_identical(first, written(tmp_path / name))
