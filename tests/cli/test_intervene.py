"""``jaxdissect intervene`` on a tiny ProGAN .pth with a fixed colour segmenter, checked
against the reference's procedure in PyTorch (a full generator forward per edit)."""

import json
import re

import numpy as np
import pytest
import torch

from jaxdissect import cli
from jaxdissect.data.source import ZSource
from tests.support.tiny_checkpoints import gan_forward, tiny_gan_pth
from tests.support.tiny_nets import SEG_LABELS, torch_segment

N = 12
L = len(SEG_LABELS)
PIX = 1.0 / 256 / N * 1.01  # one pixel of one 16x16 sample


def shares(img):
    seg = torch_segment(img)
    return (seg[..., None] == torch.arange(L)).any(1).double().mean((1, 2)).numpy()


@pytest.fixture(scope="module")
def run_intervene(tmp_path_factory):
    d = tmp_path_factory.mktemp("intervene")
    model = tiny_gan_pth(str(d / "g.pth"))
    out = d / "res"
    argv = ["intervene", "--model", str(d / "g.pth"), "--segmenter",
            "py:tests.support.tiny_nets:TinySegmenter", "--num-samples", str(N),
            "--max-remove", "3",
            "--insert-units", "2", "--remove", "green", "--insert", "blue", "--batch-size",
            "5", "--chunk", "4", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    return model, out


@pytest.mark.slow
def test_matches_torch_loop(run_intervene):
    model, out = run_intervene
    res = json.load(open(out / "intervene" / "intervention.json"))
    z = ZSource(N, 8, 1).batch(0, N)["z"]
    base = shares(gan_forward(model, z))

    def zeroed(units):
        def f(h):
            h = h.clone()
            h[:, list(units)] = 0
            return h
        return shares(gan_forward(model, z, f)) - base

    np.testing.assert_allclose(res["baseline_share"], base.mean(0), atol=PIX)
    want = np.stack([zeroed([u]).mean(0) for u in range(8)])
    np.testing.assert_allclose(res["unit_ablation_delta"], want, atol=2 * PIX)
    iou = np.load(out / "dissect" / "iou.npy")
    green = SEG_LABELS.index("green")
    order = np.argsort(-iou[:, green], kind="stable")
    curve = res["removal"]["green"]
    assert curve["units"] == order[:3].tolist()
    b = base[:, green].mean()
    for n in range(4):
        assert curve["removed_fraction"][n] == pytest.approx(
            -zeroed(order[:n])[:, green].mean() / b, abs=4 * PIX / b)
    # insertion: the top-2 blue units set to their 99.5% levels at each 8x8 location
    blue = SEG_LABELS.index("blue")
    ins = res["insertion"]["blue"]
    units = ins["units"]
    assert units == np.argsort(-iou[:, blue], kind="stable")[:2].tolist()
    acts = gan_forward(model, z, stop="layer4")  # [N, 8, 8, 8]
    flat = acts.reshape(-1, 8)
    k = int(np.ceil(0.005 * flat.shape[0]))
    high = -np.sort(-flat, axis=0)[k - 1]
    seg0 = torch_segment(gan_forward(model, z))
    b_blue = shares(gan_forward(model, z))[:, blue]
    s, n = np.zeros(L), np.zeros(L)
    for y in range(8):
        for x in range(8):
            def put(h, y=y, x=x):
                h = h.clone()
                h[:, units, y, x] = torch.tensor(high[units])[None]
                return h
            d = shares(gan_forward(model, z, put))[:, blue] - b_blue
            for i in range(N):
                for c in torch.unique(seg0[i, :, 2 * y + 1, 2 * x + 1]).tolist():
                    if c:
                        s[c] += d[i]
                        n[c] += 1
    rows = {r["name"]: r for r in ins["contexts"]}
    for c in range(1, L):
        if n[c] >= 20:
            r = rows[SEG_LABELS.names[c]]
            assert r["count"] == n[c]
            assert r["mean_added"] == pytest.approx(s[c] / n[c], abs=64 * PIX)


@pytest.mark.slow
def test_index_links_and_findings(run_intervene):
    _, out = run_intervene
    index = open(out / "index.html").read()
    for link in re.findall(r'href="([^"]+)"', index):
        assert (out / link).is_file(), link
    assert "Zeroing the 3 best-IoU units of <b>green</b>" in index


@pytest.mark.slow
def test_unknown_concept_is_named(run_intervene, capsys):
    model, out = run_intervene
    argv = ["intervene", "--model", str(out.parent / "g.pth"), "--segmenter",
            "py:tests.support.tiny_nets:TinySegmenter", "--num-samples", str(N), "--remove", "tree",
            "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 2
    assert "unknown concept 'tree'" in capsys.readouterr().err
