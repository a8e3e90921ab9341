"""``jaxdissect dissect --data broden:DIR --segmenter broden --iou-rule ...`` on a
Broden-format fixture written by the tests: NetDissect's tally.csv in the results
folder, consistent with iou.npy, and the two IoU rules as they must relate."""

import numpy as np
import pytest

from jaxdissect import cli
from jaxdissect.report.netdissect_csv import read_csv
from tests.support.broden import CATEGORIES, write_broden
from tests.support.tiny_checkpoints import tiny_vgg_pth


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_broden")
    write_broden(str(d / "broden"))
    tiny_vgg_pth(str(d / "tiny.pth"))
    outs = {}
    for rule, extra in (("pnas", []), ("netdissect", ["--segmenter", "broden"])):
        out = d / rule  # pnas: the segmenter defaults to broden for Broden data
        assert cli.main(["dissect", "--model", str(d / "tiny.pth"), "--data",
                         f"broden:{d / 'broden'}", "--iou-rule", rule, "--batch-size", "4",
                         "--out", str(out), "--no-progress"] + extra) == 0
        outs[rule] = out
    return d, outs


@pytest.mark.slow
def test_tally_csv_agrees_with_iou(runs):
    _, outs = runs
    for out in outs.values():
        iou = np.load(out / "iou.npy")
        table = read_csv(str(out / "tally.csv"))
        assert table.categories == CATEGORIES  # category.csv's order
        np.testing.assert_array_equal(table.unit, np.arange(iou.shape[0]))
        np.testing.assert_array_equal(table.score, iou.max(axis=1))
        assert (out / "report.html").exists()
    pnas = read_csv(str(outs["pnas"] / "tally.csv"))
    nd = read_csv(str(outs["netdissect"] / "tally.csv"))
    assert np.all(np.load(outs["netdissect"] / "iou.npy")
                  >= np.load(outs["pnas"] / "iou.npy") - 1e-15)
    for cat in CATEGORIES:
        # the unit's side of the union: whole area (pnas), its part over images where
        # it touches the category (netdissect)
        np.testing.assert_array_equal(pnas.columns["color"].activation,
                                      pnas.columns[cat].activation)
        assert np.all(nd.columns[cat].activation <= pnas.columns[cat].activation)
    assert np.any(nd.columns["part"].activation < pnas.columns["part"].activation)


@pytest.mark.slow
def test_broden_segmenter_needs_broden_data(runs, tmp_path, capsys):
    d, _ = runs
    assert cli.main(["dissect", "--model", str(d / "tiny.pth"), "--data", "world",
                     "--num-images", "2", "--segmenter", "broden", "--out",
                     str(tmp_path / "o"), "--no-progress"]) == 2
    assert "broden:DIR" in capsys.readouterr().err
    assert cli.main(["dissect", "--model", str(d / "tiny.pth"), "--data",
                     f"broden:{tmp_path / 'none'}", "--out", str(tmp_path / "o"),
                     "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
