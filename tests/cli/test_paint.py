"""``jaxdissect paint`` on a tiny ProGAN .pth with a fixed colour segmenter, checked
against a PyTorch forward with the edit written out in torch."""

import json

import numpy as np
import pytest
import torch

from jaxdissect import cli
from jaxdissect.data.source import ZSource
from tests.support.tiny_checkpoints import gan_forward, tiny_gan_pth
from tests.support.tiny_nets import SEG_LABELS, torch_segment

EDITS = ["green:off:0,0,1,0.5", "blue:on:0.25,0.5,0.75,1"]


@pytest.fixture(scope="module")
def run_paint(tmp_path_factory):
    d = tmp_path_factory.mktemp("paint")
    model = tiny_gan_pth(str(d / "g.pth"))
    out = d / "res"
    argv = ["paint", "--model", str(d / "g.pth"), "--segmenter",
            "py:tests.support.tiny_nets:TinySegmenter", "--num-samples", "12", "--num-z", "3",
            "--units", "3", "--batch-size", "6", "--out", str(out), "--no-progress"]
    for e in EDITS:
        argv += ["--edit", e]
    assert cli.main(argv) == 0
    return model, out, d


@pytest.mark.slow
def test_paint_matches_torch(run_paint):
    model, out, _ = run_paint
    res = json.load(open(out / "paint.json"))
    painted = np.load(out / "painted.npy")
    iou = np.load(out / "dissect" / "iou.npy")
    levels = np.asarray(json.load(open(out / "dissect" / "report.json"))["dissection"][
        "levels"]["0.005"])
    z = ZSource(3, 8, 2).batch(0, 3)["z"]
    base = gan_forward(model, z)
    assert painted.shape == (2, 3, 16, 16, 3)
    for e, (rec, spec) in enumerate(zip(res["edits"], EDITS)):
        concept, mode, box = spec.split(":")
        y0, x0, y1, x1 = (float(v) for v in box.split(","))
        units = np.argsort(-iou[:, SEG_LABELS.index(concept)], kind="stable")[:3]
        assert rec["units"] == units.tolist() and rec["mode"] == mode
        value = np.zeros(8, np.float32)
        if mode == "on":
            value[units] = levels[units]
        np.testing.assert_allclose(rec["values"], value[units], rtol=1e-6)
        # the region on the 8x8 grid: each cell's share of its 2x2 image block
        img_mask = np.zeros((16, 16))
        img_mask[round(y0 * 16):round(y1 * 16), round(x0 * 16):round(x1 * 16)] = 1
        cell = img_mask.reshape(8, 2, 8, 2).mean((1, 3))
        alpha = np.zeros((8, 8, 8))
        alpha[units] = cell
        a = torch.tensor(alpha, dtype=torch.float32)[None]
        v = torch.tensor(value)[None, :, None, None]
        want = gan_forward(model, z, edit=lambda h, a=a, v=v: h * (1 - a) + v * a)
        np.testing.assert_allclose(painted[e], want.numpy(), atol=2e-5)
        # measured concept pixels in the box, by the same segmenter in torch
        label = SEG_LABELS.index(concept)
        region = torch.tensor(img_mask > 0.5)

        def count(images, label=label, region=region):
            return ((torch_segment(images) == label).any(1) & region).sum((1, 2)).numpy()

        assert rec["measured"]["before"] == count(base).tolist()
        assert rec["measured"]["after"] == count(want).tolist()
    for f in ("paint.html", "painted.png", "dissect/report.html",
              "images/edit1_blue_on_z2.png"):
        assert (out / f).is_file(), f


@pytest.mark.slow
def test_paint_errors(run_paint, capsys):
    _, out, d = run_paint
    base = ["paint", "--model", str(d / "g.pth"), "--segmenter",
            "py:tests.support.tiny_nets:TinySegmenter", "--num-samples", "12", "--num-z", "2",
            "--out", str(out), "--no-progress"]
    capsys.readouterr()
    for edit, msg in (("tree:off:0,0,1,1", "unknown concept 'tree'"),
                      ("green:add:0,0,1,1", "mode must be 'on' or 'off'"),
                      ("green:off:0,0,1", "four numbers"),
                      ("green:off:0.5,0,0.2,1", "box (y0, x0, y1, x1) must satisfy"),
                      ("green", "expected CONCEPT")):
        assert cli.main(base + ["--edit", edit]) == 2
        assert msg in capsys.readouterr().err


def test_default_edits_pick_the_object_with_most_labelled_units():
    from types import SimpleNamespace

    from jaxdissect.labels import LabelSet
    from jaxdissect.pipeline.paint import default_edits

    labels = LabelSet.from_pairs([("tree", "object"), ("red", "color"), ("door", "object")])
    iou = np.zeros((5, 4))
    best = np.array([1, 3, 3, 2, 2])
    iou[np.arange(5), best] = [0.2, 0.1, 0.1, 0.3, 0.3]
    dres = SimpleNamespace(labels=labels, best_label=best, labelled=iou.max(1) > 0.04, iou=iou)
    assert default_edits(dres) == ["door:off:0,0,1,0.5", "door:on:0,0.5,1,1"]
