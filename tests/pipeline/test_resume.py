"""A finished demo re-run into its folder computes no sweep and runs no model (it writes
the same files, byte for byte); an ablate or a demo killed
after its sweeps were saved resumes without recomputing them and gives the results of
an uninterrupted run (sweeps counted around the sweep driver)."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import pytest

from jaxdissect import report
from jaxdissect.pipeline.ablation import run_ablate
from jaxdissect.pipeline.config import AblateConfig, DemoConfig
from jaxdissect.pipeline.demo import run_demo
from tests.support.pipeline import assert_identical, counting_model_calls, counting_sweeps, written

pytestmark = pytest.mark.slow

DEMO = DemoConfig(images=24, samples=24, sweep_samples=2, removal_samples=4,
                  insertion_samples=2, batch_size=8, progress=False)
ABLATE = AblateConfig(model="world", num_images=24, train_images=16, ks=(1, 2, 5),
                      curve_classes=("0",), batch_size=8, progress=False)


def killed(*a, **k):
    raise RuntimeError("killed")


def test_demo_rerun_computes_nothing_and_a_killed_demo_resumes(tmp_path, monkeypatch):
    cfg = dataclasses.replace(DEMO, out=str(tmp_path / "demo"))
    with counting_sweeps(monkeypatch) as ran:
        first = run_demo(cfg)
    assert len(ran) >= 8      # dissections, significance, ablation and intervention sweeps
    files = written(tmp_path / "demo")
    assert any(p.endswith(".png") and "units" in p for p in files)          # thumbnails
    assert any(p.startswith(os.path.join("generator", "intervene")) and p.endswith(".png")
               for p in files)                                              # pictures
    with counting_sweeps(monkeypatch) as ran, counting_model_calls(monkeypatch) as calls:
        again = run_demo(cfg)
        jax.effects_barrier()
    assert ran == [] and calls == []          # no sweep, and no model pass at all
    assert_identical(files, written(tmp_path / "demo"))
    assert [f.plain() for f in again.findings] == [f.plain() for f in first.findings]
    for part, spec in (("classifier", "world-classifier"), ("generator", "world-generator")):
        with open(tmp_path / "demo" / part / "dissect" / "report.json") as f:
            assert json.load(f)["model_spec"] == spec     # what `serve` loads
    killed_cfg = dataclasses.replace(cfg, out=str(tmp_path / "killed"))
    with monkeypatch.context() as m:
        m.setattr(report, "write_index", killed)
        with pytest.raises(RuntimeError, match="killed"):
            run_demo(killed_cfg)
    with counting_sweeps(monkeypatch) as ran:
        resumed = run_demo(killed_cfg)
    assert ran == []
    assert json.dumps(resumed.ablation.to_json(), sort_keys=True) == \
        json.dumps(first.ablation.to_json(), sort_keys=True)
    assert json.dumps(resumed.intervention.to_json(), sort_keys=True) == \
        json.dumps(first.intervention.to_json(), sort_keys=True)


def test_killed_ablate_resumes_its_sweeps(tmp_path, monkeypatch):
    fresh = run_ablate(dataclasses.replace(ABLATE, out=str(tmp_path / "fresh")))
    cfg = dataclasses.replace(ABLATE, out=str(tmp_path / "out"))
    with monkeypatch.context() as m:
        m.setattr(report, "write_ablation", killed)
        with counting_sweeps(monkeypatch) as ran:
            with pytest.raises(RuntimeError, match="killed"):
                run_ablate(cfg)
    assert any("single-unit" in name for name in ran)
    with counting_sweeps(monkeypatch) as ran:
        resumed = run_ablate(cfg)
    assert ran == []
    assert json.dumps(resumed.result.to_json(), sort_keys=True) == \
        json.dumps(fresh.result.to_json(), sort_keys=True)


def test_ablate_with_another_layer_of_the_same_width_in_the_same_folder(tmp_path):
    """The world classifier's conv4_3 and conv5_3 are both 128 units wide."""
    fresh = run_ablate(dataclasses.replace(ABLATE, layer="conv5_3", out=str(tmp_path / "a")))
    other = run_ablate(dataclasses.replace(ABLATE, layer="conv4_3", out=str(tmp_path / "b")))
    again = run_ablate(dataclasses.replace(ABLATE, layer="conv5_3", out=str(tmp_path / "b")))
    as_text = lambda o: json.dumps(o.result.to_json(), sort_keys=True)  # noqa: E731
    assert as_text(other) != as_text(fresh)
    assert as_text(again) == as_text(fresh)
