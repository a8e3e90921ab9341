"""``jaxdissect dissect`` on a tiny VGG-16 .pth and world images, checked against
PyTorch activations with NumPy thresholds and IoU computed on all data at once."""

import json
import math
import os

import numpy as np
import pytest

from jaxdissect import cli
from jaxdissect.data.resize import Resized
from jaxdissect.stats.upsample import Upsampler
from jaxdissect.world import WorldSource
from tests.support.tiny_checkpoints import tiny_vgg_pth, vgg_forward

N = 24


def numpy_iou(acts_up, seg, num_labels, q=0.01):
    """acts_up [n,H,W,u], seg [n,K,H,W] -> thresholds [u], iou [u,L]."""
    n, h, w, u = acts_up.shape
    flat = acts_up.reshape(-1, u)
    k = max(1, math.ceil(q * flat.shape[0]))
    t = -np.sort(-flat, axis=0)[k - 1]
    a = (acts_up > t).reshape(-1, u)
    iou = np.zeros((u, num_labels))
    for c in range(1, num_labels):
        s = (seg == c).any(1).reshape(-1)
        inter = (a & s[:, None]).sum(0)
        union = (a | s[:, None]).sum(0)
        iou[:, c] = np.where(union > 0, inter / np.maximum(union, 1), 0)
    return t, iou


@pytest.fixture(scope="module")
def run_dissect(tmp_path_factory):
    d = tmp_path_factory.mktemp("dissect")
    torch_model = tiny_vgg_pth(str(d / "tiny_vgg.pth"))
    out = d / "res"
    argv = ["dissect", "--model", str(d / "tiny_vgg.pth"), "--data", "world", "--num-images",
            str(N), "--segmenter", "truth", "--seg-downsample", "1", "--batch-size", "8",
            "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    return torch_model, out, argv


@pytest.mark.slow
def test_iou_matches_torch_numpy(run_dissect):
    torch_model, out, _ = run_dissect
    # the command's val seed; the world renders at 128 and reaches the 224 VGG resized
    src = Resized(WorldSource(N, seed=4, size=128), (224, 224), "resize-crop")
    batch = src.batch(0, N)
    acts = vgg_forward(torch_model, batch["image"], stop="conv5_3")  # [n, 14, 14, 8]
    # VGG-16's plain upsampling (the reference's), from the 14x14 map to the 128 grid
    up = Upsampler.plain(acts.shape[1:3], (128, 128))
    acts_up = np.einsum("yi,xj,bijc->byxc", np.asarray(up.wy, np.float64),
                        np.asarray(up.wx, np.float64), acts.astype(np.float64))
    t, iou = numpy_iou(acts_up, batch["seg"], len(src.seg_labels))
    got = np.load(out / "iou.npy")
    assert got.shape == iou.shape
    # float32 upsampling vs float64: a pixel at a threshold may flip; allow that
    np.testing.assert_allclose(got, iou, atol=2e-3)
    rep = json.load(open(out / "report.json"))
    best = iou.argmax(1)
    for u, unit in enumerate(rep["units"]):
        assert unit["iou"] == pytest.approx(iou[u].max(), abs=2e-3)
        if iou[u].max() - np.sort(iou[u])[-2] > 5e-3:
            assert unit["label"] == src.seg_labels.names[best[u]]
        np.testing.assert_allclose(unit["threshold"], t[u], rtol=1e-4, atol=1e-5)


def test_report_files_and_resume(run_dissect, capsys):
    _, out, argv = run_dissect
    for f in ("report.html", "concepts.svg", "report.json"):
        assert (out / f).is_file()
    rep = json.load(open(out / "report.json"))
    for unit in rep["units"]:
        if unit["image"]:
            assert (out / unit["image"]).is_file()
    caches = sorted((out / "cache").iterdir())
    assert caches
    mtimes = [os.path.getmtime(c) for c in caches]
    assert cli.main(argv) == 0  # re-run: the passes come from the cache
    assert [os.path.getmtime(c) for c in sorted((out / "cache").iterdir())] == mtimes
    assert np.array_equal(np.load(out / "iou.npy"), np.load(out / "iou.npy"))
    assert str(out / "report.html") in capsys.readouterr().out


@pytest.mark.parametrize("extra,msg", [
    (["--model", "/nonexistent/m.pth"], "does not exist"),
    (["--quantile", "2"], "--quantile"),
    (["--model", "nosuchmodel"], "unknown model"),
    (["--data", "z", "--model", "PTH"], "--data z is for generators"),
    (["--max-p", "2"], "--max-p"),
    (["--significance", "--iou-rule", "netdissect"], "pnas IoU rule"),
])
def test_bad_input_exits_2(run_dissect, extra, msg, capsys, tmp_path):
    pth = str(run_dissect[1].parent / "tiny_vgg.pth")
    extra = [pth if e == "PTH" else e for e in extra]
    argv = ["dissect", "--model", pth, "--num-images", "4", "--out", str(tmp_path)] + extra
    assert cli.main(argv) == 2
    assert msg in capsys.readouterr().err


@pytest.mark.slow
def test_significance_and_max_p(run_dissect, capsys, tmp_path):
    """--max-p tests every label and keeps those with p <= max_p; report.json and the
    cards carry p-values and intervals."""
    _, _, argv = run_dissect
    out = tmp_path / "sig"
    assert cli.main(argv + ["--out", str(out), "--max-p", "0.05", "--permutations", "200",
                            "--miniou", "0.005"]) == 0  # random tiny weights: low IoUs
    printed = capsys.readouterr().out
    rep = json.load(open(out / "report.json"))
    tested = [u for u in rep["units"] if u.get("p_value") is not None]
    assert tested and rep["significance"]["tested"] == len(tested)
    assert all(u["iou"] > 0.005 for u in tested)
    for u in rep["units"]:
        assert u["labelled"] == (u["iou"] > 0.005 and u.get("p_value") is not None
                                 and u["p_value"] <= 0.05)
        if u.get("p_value") is not None:
            assert 1 / 201 <= u["p_value"] <= 1 and u["iou_low"] <= u["iou_high"]
    assert "false-discovery rate" in printed and "p <= 0.05" in printed
    assert "labels survive a 1% false-discovery rate" in (out / "report.html").read_text()


@pytest.mark.slow
def test_changed_weights_at_the_same_path_give_new_results(tmp_path):
    """Caches are keyed by the weights' bytes, not the model's name or path."""
    import torch

    from tests.support.tiny_checkpoints import VGG_ARGS, torch_vgg16
    pth = str(tmp_path / "m.pth")
    tiny_vgg_pth(pth)
    argv = ["dissect", "--model", pth, "--data", "world", "--num-images", "8", "--segmenter",
            "truth", "--seg-downsample", "2", "--batch-size", "8", "--no-progress", "--out"]
    assert cli.main(argv + [str(tmp_path / "a")]) == 0
    first = np.load(tmp_path / "a" / "iou.npy")
    torch.save(torch_vgg16(**VGG_ARGS, seed=1).state_dict(), pth)  # new weights, same file
    assert cli.main(argv + [str(tmp_path / "a")]) == 0
    assert cli.main(argv + [str(tmp_path / "b")]) == 0  # fresh folder, no cache
    again, fresh = np.load(tmp_path / "a" / "iou.npy"), np.load(tmp_path / "b" / "iou.npy")
    assert not np.array_equal(again, first)
    np.testing.assert_array_equal(again, fresh)


@pytest.mark.slow
def test_significance_is_the_same_at_any_batch_size(run_dissect, tmp_path):
    """dissect --significance at batch sizes 8, 32 and 64: the same p-values,
    intervals and chance levels (permutation blocks follow the global image index)."""
    _, _, argv = run_dissect
    reports = []
    for b in (8, 32, 64):
        out = tmp_path / f"b{b}"
        assert cli.main(argv + ["--out", str(out), "--significance", "--permutations", "200",
                                "--miniou", "0.005", "--batch-size", str(b)]) == 0
        units = json.load(open(out / "report.json"))["units"]
        reports.append([(u["unit"], u.get("p_value"), u.get("iou_low"), u.get("iou_high"))
                        for u in units])
    assert any(r[1] is not None for r in reports[0])
    assert reports[0] == reports[1] == reports[2]
    for _, p, lo, hi in reports[0]:
        if p is not None:
            assert 1 / 201 <= p <= 1 and 0 <= lo <= hi <= 1
