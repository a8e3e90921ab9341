"""The workspace owns cache identity: a results folder re-run with another layer of the
same width, another segmenter with the same labels, other data of the same size or
another setting (through the library and the command line), finished or killed after
its sweeps were saved, gives exactly a fresh run's results; a re-run of the same run
computes no sweep. Each variant is compared both ways: the base run finished over the
variant's folder, and the variant killed over the base run's folder, then resumed."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from jaxdissect import cli
from jaxdissect.pipeline.config import InterveneConfig
from jaxdissect.pipeline.intervention import run_intervene
from tests.support.pipeline import counting_sweeps

pytestmark = pytest.mark.slow

#: a tiny intervention on the world generator (its layer3 and layer4 are both 128 wide)
BASE = InterveneConfig(model="world-generator", layer="layer4", num_samples=16,
                       sweep_samples=2, removal_samples=4, insertion_samples=2, max_remove=2,
                       insert_units=2, batch_size=8, remove=("tree",), insert=("door",),
                       progress=False)

VARIANTS = {
    "layer": dict(layer="layer3"),
    "segmenter": dict(segmenter="py:tests.support.pipeline:other_world_segmenter"),
    "data": dict(seed=2),
    "setting": dict(quantile=0.02),
}


def outcome(o) -> dict:
    """Every number of an intervention run: its result and its dissection's."""
    d = o.dissection
    return {"result": json.dumps(o.result.to_json(), sort_keys=True),
            "iou": d.iou.tobytes(), "thresholds": d.thresholds.tobytes(),
            "labels": d.best_label.tobytes()}


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """The base run's folder and outcome."""
    folder = tmp_path_factory.mktemp("base") / "out"
    o = run_intervene(dataclasses.replace(BASE, out=str(folder)))
    return folder, outcome(o)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_runs_in_one_folder_equal_fresh_runs(first, variant, tmp_path, monkeypatch):
    """The variant fresh; then the base run finished over its folder (equal to the
    base run fresh); then the variant killed over that folder after its sweeps were
    saved, and resumed (no sweep recomputed; equal to the variant fresh)."""
    _, base = first
    other = dataclasses.replace(BASE, **VARIANTS[variant])
    folder = str(tmp_path / "out")
    fresh = outcome(run_intervene(dataclasses.replace(other, out=folder)))
    assert fresh != base                     # the variant changes the numbers
    with counting_sweeps(monkeypatch) as ran:
        over = run_intervene(dataclasses.replace(BASE, out=folder))
    assert outcome(over) == base and ran     # its sweeps computed, not the variant's reused
    from jaxdissect import report

    def killed(*a, **k):
        raise RuntimeError("killed")
    with monkeypatch.context() as m:
        m.setattr(report, "write_intervention", killed)
        with pytest.raises(RuntimeError, match="killed"):
            run_intervene(dataclasses.replace(other, out=folder))
    assert (tmp_path / "out.partial").is_dir()
    with counting_sweeps(monkeypatch) as ran:
        resumed = run_intervene(dataclasses.replace(other, out=folder))
    assert outcome(resumed) == fresh
    assert ran == []                         # every sweep came from the killed run's caches


def test_same_run_again_computes_no_sweep(first, monkeypatch):
    folder, base = first
    with counting_sweeps(monkeypatch) as ran:
        again = run_intervene(dataclasses.replace(BASE, out=str(folder)))
    assert outcome(again) == base and ran == []


def test_cli_layer3_then_layer4_equals_layer4_fresh(tmp_path):
    argv = ["intervene", "--num-samples", "16", "--sweep-samples", "2", "--removal-samples",
            "4", "--insertion-samples", "2", "--max-remove", "2", "--insert-units", "2",
            "--batch-size", "8", "--remove", "tree", "--insert", "door", "--no-progress"]

    def numbers(out):
        with open(out / "intervene" / "intervention.json") as f:
            return json.load(f), np.load(out / "dissect" / "iou.npy").tobytes()
    assert cli.main(argv + ["--layer", "layer4", "--out", str(tmp_path / "fresh")]) == 0
    assert cli.main(argv + ["--layer", "layer3", "--out", str(tmp_path / "same")]) == 0
    assert numbers(tmp_path / "same") != numbers(tmp_path / "fresh")
    assert cli.main(argv + ["--layer", "layer4", "--out", str(tmp_path / "same")]) == 0
    assert numbers(tmp_path / "same") == numbers(tmp_path / "fresh")
