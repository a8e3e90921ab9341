"""``jaxdissect ablate`` on a tiny VGG-16 .pth and world images, checked against the
reference's procedure in PyTorch: one full forward per ablated set of units."""

import json
import os
import re

import numpy as np
import pytest

from jaxdissect import cli
from jaxdissect.data.resize import Resized
from jaxdissect.world import WorldSource
from tests.support.tiny_checkpoints import tiny_vgg_pth, vgg_forward

N = 20
CLASSES = 11


_memo = {}


def torch_ba(model, batch, zero):
    key = (id(model), id(batch), tuple(sorted(int(u) for u in zero)))
    if key not in _memo:
        _memo[key] = _torch_ba(model, batch, zero)
    return _memo[key]


def _torch_ba(model, batch, zero):
    """Balanced accuracy [C] and mean log-probability of each class on its examples."""
    y = batch["label"]
    logits = vgg_forward(model, batch["image"], zero=zero).astype(np.float64)
    pred = logits.argmax(1)
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    out, lp = np.zeros(CLASSES), np.zeros(CLASSES)
    for c in range(CLASSES):
        t, p = y == c, pred == c
        recall = (t & p).sum() / t.sum() if t.sum() else np.nan
        tnr = (~t & ~p).sum() / (~t).sum()
        out[c] = (recall + tnr) / 2
        lp[c] = logp[t, c].mean() if t.sum() else np.nan
    return out, lp


@pytest.fixture(scope="module")
def run_ablate(tmp_path_factory):
    d = tmp_path_factory.mktemp("ablate")
    model = tiny_vgg_pth(str(d / "tiny_vgg.pth"))
    out = d / "res"
    argv = ["ablate", "--model", str(d / "tiny_vgg.pth"), "--data", "world", "--num-images",
            str(N), "--train-images", str(N), "--ks", "1,2,20", "--curve-classes", "0",
            "--batch-size", "8", "--chunk", "4", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    return model, out


@pytest.mark.slow
def test_ablation_matches_torch_loop(run_ablate):
    model, out = run_ablate
    res = json.load(open(out / "ablate" / "ablation.json"))
    train, val = (Resized(WorldSource(N, seed=s, size=128), (224, 224), "resize-crop")
                  .batch(0, N) for s in (3, 4))   # the world reaches the 224 VGG resized
    units = 8
    base = torch_ba(model, train, [])[0]
    single = np.stack([torch_ba(model, train, [u])[0] for u in range(units)])
    single_lp = np.stack([torch_ba(model, train, [u])[1] for u in range(units)])
    got_single = np.array(res["single_unit_ba_train"], dtype=float)
    np.testing.assert_allclose(got_single, single, atol=1e-12)
    dmg = np.nan_to_num(single - base[None], nan=np.inf)
    lpn = np.nan_to_num(single_lp, nan=np.inf)
    # the command's ranking orders units by torch's damage, then log-probability (equal
    # within float rounding: units that change nothing tie up to the last digits)
    ranking = np.array(res["ranking"])
    for c in range(CLASSES):
        assert sorted(ranking[c]) == list(range(units))
        for a, b in zip(ranking[c][:-1], ranking[c][1:]):
            assert dmg[a, c] < dmg[b, c] or (dmg[a, c] == dmg[b, c]
                                             and lpn[a, c] <= lpn[b, c] + 1e-5), (c, a, b)
    assert res["ks"] == [1, 2, units]
    for c in range(CLASSES):
        for i, k in enumerate(res["ks"]):
            rm = torch_ba(model, val, ranking[c, :k])[0][c]
            kp = torch_ba(model, val, ranking[c, k:])[0][c]
            for got, want in ((res["removed_top_k_ba"][c][i], rm),
                              (res["kept_top_k_ba"][c][i], kp)):
                if np.isnan(want):
                    assert got is None
                else:
                    assert got == pytest.approx(want, abs=1e-12)
    assert len(res["curves"]["0"]["removed"]) == units - 1


@pytest.mark.slow
def test_pages_link_every_part(run_ablate):
    _, out = run_ablate
    index = open(out / "index.html").read()
    for link in re.findall(r'href="([^"]+)"', index):
        assert (out / link).is_file(), link
    page = open(out / "ablate" / "ablation.html").read()
    for img in re.findall(r'src="([^"]+)"', page):
        assert os.path.getsize(out / "ablate" / img) > 1000


@pytest.mark.slow
def test_bad_input(run_ablate, tmp_path, capsys):
    assert cli.main(["ablate", "--ks", "0,x", "--out", str(tmp_path)]) == 2
    assert "--ks" in capsys.readouterr().err
    pth = str(run_ablate[1].parent / "tiny_vgg.pth")
    assert cli.main(["ablate", "--model", pth, "--curve-classes", "nosuch", "--num-images",
                     "4", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "unknown class 'nosuch'" in capsys.readouterr().err
