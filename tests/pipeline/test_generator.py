"""A generator run (intervene, paint) starts from one resolved dissection over z
samples: the same model, layer, samples and segmenter for the same options, the same
checks before any work, each run's name in its errors."""

from __future__ import annotations

import pytest

from jaxdissect.errors import UserError
from jaxdissect.pipeline.config import InterveneConfig, PaintConfig
from jaxdissect.pipeline.intervention import generator_dissection, resolve_intervene
from jaxdissect.pipeline.paint import run_paint


def test_intervene_and_paint_resolve_the_same_dissection():
    d, out = resolve_intervene(InterveneConfig(num_samples=8, seed=3, layer="layer3"))
    p = generator_dissection(PaintConfig(num_samples=8, seed=3, layer="layer3"), "paint",
                             ["tree"], full_grid=True)
    assert out.endswith("-layer3")
    for field in ("model_spec", "layer", "segmenter_name", "data_name", "quantile",
                  "miniou", "batch_size"):
        assert getattr(p, field) == getattr(d, field), field
    assert p.source.identity() == d.source.identity()
    assert (d.seg_downsample, p.seg_downsample) == (4, 1)   # paint measures at full size
    assert d.significance and not p.significance


@pytest.mark.parametrize("run, cfg, command", [
    (resolve_intervene, InterveneConfig(model="world", num_samples=8), "intervene"),
    (run_paint, PaintConfig(model="world", num_samples=8), "paint")])
def test_a_classifier_is_refused_naming_the_run(run, cfg, command):
    with pytest.raises(UserError, match=f"'world' is a classifier; jaxdissect {command} "
                                        "needs a generator"):
        run(cfg)


@pytest.mark.parametrize("run, cfg, match", [
    (resolve_intervene, InterveneConfig(num_samples=8, remove=("dragon",)), "dragon"),
    (run_paint, PaintConfig(num_samples=8, edit=("dragon:on:0,0,1,1",)), "dragon"),
    (resolve_intervene, InterveneConfig(num_samples=8, layer="nolayer"), "nolayer"),
    (run_paint, PaintConfig(num_samples=8, layer="nolayer"), "nolayer")])
def test_unknown_concepts_and_layers_fail_before_any_work(run, cfg, match, tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=match):
        run(cfg)
    assert list(tmp_path.iterdir()) == []      # nothing written
