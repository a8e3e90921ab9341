"""The ablation's plots when balanced accuracies are missing (NaN: a class with no val
images, or a folder of one class, where no image is of another class): every plot is
drawn, and it states which values are missing; ``ablate`` on a one-class folder
finishes and writes its results."""

import json
import warnings

import numpy as np
import pytest

from jaxdissect.report import plots


@pytest.fixture
def drawn(monkeypatch):
    """The texts (legend, notes, labels) of every figure the plots save."""
    texts = []
    save = plots._save

    def keep(fig, path):
        for ax in fig.axes:
            legend = ax.get_legend()
            texts.append([t.get_text() for t in ax.texts] +
                         ([t.get_text() for t in legend.get_texts()] if legend else []))
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return texts


def test_every_value_missing(tmp_path, drawn):
    nan = np.full(3, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)     # no mean of an empty slice
        names = [plots.ablation_classes(str(tmp_path / "c.png"), ["a", "b", "c"], nan, nan,
                                        nan, 2),
                 plots.ablation_k(str(tmp_path / "k.png"), [1, 2, 20], np.full((3, 3), np.nan),
                                  np.full((3, 3), np.nan), nan),
                 plots.ablation_curve(str(tmp_path / "a.png"), "a", np.arange(4),
                                      np.full(4, np.nan), np.full(4, np.nan), np.nan)]
    assert names == ["c.png", "k.png", "a.png"]
    for name in names:
        assert (tmp_path / name).stat().st_size > 1000
    classes, k, curve = drawn
    assert "no class has a value\n" + plots.UNDEFINED in classes
    assert classes.count("n/a") == 3 and "no units removed (mean n/a)" in classes
    assert "no class has a value\n" + plots.UNDEFINED in k
    assert "a: no value\n" + plots.UNDEFINED in curve


def test_some_values_missing(tmp_path, drawn):
    base = np.array([0.9, np.nan, 0.7])
    removed = np.array([[0.6, 0.5], [np.nan, np.nan], [0.55, 0.5]])
    kept = np.array([[0.8, 0.85], [np.nan, np.nan], [0.65, 0.7]])
    plots.ablation_classes(str(tmp_path / "c.png"), ["a", "b", "c"], base, removed[:, 0],
                           kept[:, 0], 1)
    plots.ablation_k(str(tmp_path / "k.png"), [1, 2], removed, kept, base)
    classes, k = drawn
    note = "1 of 3 class n/a (not drawn)\n" + plots.UNDEFINED
    assert note in classes and note in k and classes.count("n/a") == 1
    # the means over the classes that have a value
    assert "no units removed (mean 80.0%)" in classes
    assert "1 most important units removed (mean 57.5%)" in classes


@pytest.mark.slow
def test_ablate_on_a_one_class_folder_finishes(tmp_path):
    """Every image of one class: no balanced accuracy is defined, the findings do not
    apply, and the command still writes its pages, plots and JSON."""
    from PIL import Image

    from jaxdissect import cli
    from tests.support.tiny_checkpoints import tiny_vgg_pth

    rng = np.random.default_rng(0)
    (tmp_path / "val" / "beach").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            tmp_path / "val" / "beach" / f"{i}.png")
    tiny_vgg_pth(str(tmp_path / "m.pth"))
    out = tmp_path / "res" / "ablate"
    assert cli.main(["ablate", "--model", str(tmp_path / "m.pth"), "--data",
                     str(tmp_path / "val"), "--segmenter",
                     "py:tests.support.tiny_nets:TinySegmenter",
                     "--ks", "1,2", "--batch-size", "4", "--chunk", "4", "--out",
                     str(tmp_path / "res"), "--no-progress"]) == 0
    text = (out / "ablation.json").read_text()
    assert "NaN" not in text
    res = json.loads(text)
    assert all(v is None for v in res["removed_top_k_ba"][0])
    assert [f["status"] for f in res["findings"]] == ["not applicable"] * 2
    for png in ("ablation_classes.png", "ablation_k.png"):
        assert (out / png).stat().st_size > 1000
    assert "n/a" in (out / "ablation.html").read_text()
