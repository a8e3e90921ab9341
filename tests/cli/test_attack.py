"""``jaxdissect attack`` on a tiny VGG-16 .pth and world images, checked against the
PyTorch model: the adversarial images it saves reach the target class, and the unit
shifts it reports are the torch model's mean conv5_3 activations."""

import json
import re

import numpy as np
import pytest
import torch

from jaxdissect import cli
from jaxdissect.data.resize import Resized
from jaxdissect.experiments import attack, results
from jaxdissect.world import WorldSource
from tests.support.reference_torch import torch_vgg16
from tests.support.tiny_checkpoints import VGG_ARGS, vgg_forward

N = 40


def sensitive_vgg_pth(path):
    """The tiny VGG with He-initialised weights, so its logits depend on the image
    (the default initialisation of so narrow a net gives near-constant logits)."""
    model = torch_vgg16(**VGG_ARGS, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen)
                                 * (2.0 / fan_in) ** 0.5)
                mod.bias.zero_()
    torch.save(model.state_dict(), path)
    return model


@pytest.fixture(scope="module")
def run_attack(tmp_path_factory):
    d = tmp_path_factory.mktemp("attack")
    model = sensitive_vgg_pth(str(d / "tiny_vgg.pth"))
    data = Resized(WorldSource(N, seed=4, size=128), (224, 224), "resize-crop").batch(0, N)
    pred = vgg_forward(model, data["image"]).argmax(1)
    ok = data["label"][pred == data["label"]]
    assert ok.size, "the tiny model classifies no world image correctly"
    source = int(np.bincount(ok).argmax())
    target = (source + 3) % 11
    out = d / "res"
    argv = ["attack", "--model", str(d / "tiny_vgg.pth"), "--data", "world",
            "--source", str(source), "--target", str(target), "--num-images", "3",
            "--search-images", str(N), "--steps", "40", "--lr", "0.05", "--c", "50",
            "--top", "3", "--rank-images", "12", "--dissect-images", "6",
            "--segmenter", "py:tests.support.tiny_nets:TinySegmenter", "--batch-size", "8",
            "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    return model, data, pred, source, target, out


@pytest.mark.slow
def test_attack_matches_torch(run_attack):
    model, data, pred, source, target, out = run_attack
    res = json.load(open(out / "attack.json"))
    idx = [r["index"] for r in res["images"]]
    want_idx = [i for i in range(N) if data["label"][i] == source and pred[i] == source][:3]
    assert idx == want_idx
    adv = np.load(out / "adversarial.npy")
    clean = data["image"][idx]
    torch_pred = vgg_forward(model, adv).argmax(1)
    success = np.array([r["success"] for r in res["images"]])
    assert success.sum() == res["success_count"] >= 1
    np.testing.assert_array_equal(torch_pred[success], target)
    np.testing.assert_allclose([r["l2"] for r in res["images"]],
                               np.sqrt(((adv - clean) ** 2).sum((1, 2, 3))), rtol=1e-4)
    a_clean = vgg_forward(model, clean, stop="conv5_3").astype(np.float64).mean((0, 1, 2))
    a_adv = vgg_forward(model, adv, stop="conv5_3").astype(np.float64).mean((0, 1, 2))
    np.testing.assert_allclose(res["unit_shift"]["clean"], a_clean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(res["unit_shift"]["delta"], a_adv - a_clean, rtol=1e-3,
                               atol=1e-5)
    ranking = np.asarray(res["ranking"])
    assert ranking.shape == (11, 8)
    assert all(sorted(r) == list(range(8)) for r in ranking.tolist())
    typed = attack.AttackResult.load(str(out / "attack.npz"))
    per_image = (vgg_forward(model, adv, stop="conv5_3").astype(np.float64).mean((1, 2)) -
                 vgg_forward(model, clean, stop="conv5_3").astype(np.float64).mean((1, 2)))
    np.testing.assert_allclose(typed.shift.per_image, per_image, rtol=1e-3, atol=1e-5)
    assert res["relation"] == results.jsonable(
        attack.relate_to_importance(typed.shift, ranking, source, target, k=3))
    assert [f["holds"] for f in res["findings"]] == [f.holds for f in typed.findings()]
    assert res["findings"][1]["samples"] == 3
    # the findings apply only if the model tells the source class from the others
    rec = res["recognition"]
    assert rec[1] == int(np.sum(data["label"] == source)) and rec[1] + rec[3] == N
    assert rec[0] == int(np.sum((data["label"] == source) & (pred == source)))
    assert rec[2] == int(np.sum((data["label"] != source) & (pred == source)))
    if res["findings"][1]["status"] == "not applicable":
        assert all("does not recognise" in f["reason"] for f in res["findings"])
    else:
        assert "over 3 images" in res["findings"][1]["text"]
    for f in ("attack.html", "examples.png", "unit_shift.png", "importance_source.png",
              "dissect/report.html"):
        assert (out / f).is_file(), f
    # every image on the page states its PNG's size
    from PIL import Image
    page = (out / "attack.html").read_text()
    imgs = re.findall(r'<img[^>]*src="([^"]+)"[^>]*width="(\d+)" height="(\d+)"', page)
    assert len(imgs) == page.count("<img") and any(src == "examples.png" for src, *_ in imgs)
    for src, w, h in imgs:
        with Image.open(out / src) as im:
            assert im.size == (int(w), int(h)), src


@pytest.mark.slow
def test_attack_ranking_file_and_errors(run_attack, tmp_path, capsys):
    model, data, pred, source, target, out = run_attack
    res = json.load(open(out / "attack.json"))
    pth = str(out.parent / "tiny_vgg.pth")
    rank = np.asarray(res["ranking"])[:, ::-1]
    (tmp_path / "ablation.json").write_text(json.dumps({"ranking": rank.tolist()}))
    # same attack settings as the fixture: the compiled attack is reused
    base = ["attack", "--model", pth, "--data", "world", "--search-images", str(N),
            "--steps", "40", "--lr", "0.05", "--c", "50", "--top", "3", "--batch-size", "8",
            "--dissect-images", "0", "--no-progress", "--num-images", "3",
            "--out", str(tmp_path / "r")]
    assert cli.main(base + ["--source", str(source), "--target", str(target), "--ranking",
                            str(tmp_path / "ablation.json")]) == 0
    got = json.load(open(tmp_path / "r" / "attack.json"))
    assert got["ranking"] == rank.tolist()
    capsys.readouterr()
    (tmp_path / "bad.json").write_text(json.dumps({"ranking": [[0, 1]]}))
    for extra, msg in ((["--source", "nowhere"], "unknown class 'nowhere'"),
                       (["--source", str(source), "--target", str(source)], "same class"),
                       (["--source", str(source), "--target", str(target), "--ranking",
                         str(tmp_path / "bad.json")], "expected [11, 8]"),
                       (["--source", str(source), "--layer", "conv9"], "layer 'conv9'")):
        assert cli.main(base + extra) == 2
        assert msg in capsys.readouterr().err
