"""A finished run re-run into its folder runs no model at all: its sweeps, unit
thumbnails and intervention pictures are all read from the folder's caches, and every
file it writes is byte-identical to the first run's. Model applications are counted
where they execute (a callback compiled into every call of a shipped world model,
classifier, generator and segmenter), not where they are traced."""

from __future__ import annotations

import contextlib
import dataclasses
import os

import jax
import pytest

from jaxdissect.pipeline.ablation import run_ablate
from jaxdissect.pipeline.config import AblateConfig, DemoConfig, DissectConfig, InterveneConfig
from jaxdissect.pipeline.demo import run_demo
from jaxdissect.pipeline.dissection import run_dissect
from jaxdissect.pipeline.intervention import run_intervene

pytestmark = pytest.mark.slow

DEMO = DemoConfig(images=24, samples=24, sweep_samples=2, removal_samples=4,
                  insertion_samples=2, batch_size=8, progress=False)
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


@contextlib.contextmanager
def counting_model_calls(monkeypatch):
    """Yields a list that grows by one each time a model (through ``taps.run``: the
    world classifier and generator) or the world segmenter is applied, counted when
    the compiled program runs. Compiled programs are cleared on entry and exit, so
    none made without the counter is reused."""
    from jaxdissect import taps
    from jaxdissect.world.segmenter import WorldSegmenter
    calls: list[str] = []
    real_run, real_segment = taps.run, WorldSegmenter.__call__

    def counted(name, real):
        def call(*args, **kwargs):
            out = real(*args, **kwargs)
            jax.debug.callback(lambda: calls.append(name))
            return out
        return call

    jax.clear_caches()
    monkeypatch.setattr(taps, "run", counted("model", real_run))
    monkeypatch.setattr(WorldSegmenter, "__call__", counted("segmenter", real_segment))
    try:
        yield calls
    finally:
        monkeypatch.setattr(taps, "run", real_run)
        monkeypatch.setattr(WorldSegmenter, "__call__", real_segment)
        jax.clear_caches()


def written(folder) -> dict[str, bytes]:
    """Every file of a results folder but its caches, by relative path."""
    files = {}
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "cache"]
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


def assert_identical(first: dict, again: dict) -> None:
    assert sorted(again) == sorted(first)
    assert [p for p in first if again[p] != first[p]] == []


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


def test_second_demo_runs_no_model_and_writes_the_same_files(tmp_path, monkeypatch):
    cfg = dataclasses.replace(DEMO, out=str(tmp_path / "demo"))
    with counting_model_calls(monkeypatch) as calls:
        run_demo(cfg)
        jax.effects_barrier()
        assert {"model", "segmenter"} <= set(calls)
    first = written(tmp_path / "demo")
    assert any(p.endswith(".png") and "units" in p for p in first)   # thumbnails
    assert any(p.startswith(os.path.join("generator", "intervene")) and p.endswith(".png")
               for p in first)                                        # pictures
    with counting_model_calls(monkeypatch) as calls:
        run_demo(cfg)
        jax.effects_barrier()
        assert calls == []
    assert_identical(first, written(tmp_path / "demo"))


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
