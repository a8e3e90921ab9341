"""Every command records its model with its ``--weights`` so that ``serve`` loads the
same model from any folder; where the recorded weights file is gone, the app says how
to pass ``--model`` / ``--weights``."""

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

from jaxdissect.app.results import Results
from jaxdissect.pipeline.resolve import model_record
from tests.support.app import fake_results


def test_the_record_holds_absolute_paths_and_names_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "world").mkdir()                    # a folder named like a model name
    (tmp_path / "w.safetensors").write_bytes(b"")
    assert model_record("world") == {"model_spec": "world", "model_weights": None}
    assert model_record("torchvision:resnet18", "random") == {
        "model_spec": "torchvision:resnet18", "model_weights": "random"}
    assert model_record("timm:vit_tiny_patch16_224", "w.safetensors")["model_weights"] == \
        str(tmp_path / "w.safetensors")
    assert model_record("w.safetensors")["model_spec"] == str(tmp_path / "w.safetensors")
    assert model_record("py:mymodels:net")["model_spec"] == "py:mymodels:net"
    assert model_record("vgg16_places365")["model_spec"] == "vgg16_places365"


def _record(folder, **fields):
    path = os.path.join(folder, "report.json")
    with open(path) as f:
        report = json.load(f)
    report.update(fields)
    with open(path, "w") as f:
        json.dump(report, f)


def test_moved_weights_are_named_with_the_options_that_fix_it(tmp_path):
    d = fake_results(str(tmp_path))
    gone = str(tmp_path / "moved" / "net.safetensors")
    _record(d, model_spec="torchvision:resnet18", model_weights=gone)
    dis = Results(str(tmp_path)).get("0")
    assert (dis.model_spec, dis.model_weights) == ("torchvision:resnet18", gone)
    with pytest.raises(LookupError) as e:
        dis.live()
    msg = str(e.value)
    assert gone in msg and "--weights gen/dissect=FILE" in msg and "--model gen/dissect=" in msg
    # --weights replaces the recorded file; --model replaces the model and its weights
    dis = Results(str(tmp_path), weights={"gen/dissect": "/new/w.pth"}).get("0")
    assert (dis.model_spec, dis.model_weights) == ("torchvision:resnet18", "/new/w.pth")
    dis = Results(str(tmp_path), models={"": "py:m:f"}).get("0")
    assert (dis.model_spec, dis.model_weights) == ("py:m:f", None)
    with pytest.raises(ValueError, match="--weights names no dissection"):
        Results(str(tmp_path), weights={"nowhere": "/w.pth"})


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torchax") is None
                    or importlib.util.find_spec("safetensors") is None,
                    reason="torchax and safetensors are not installed")
def test_serve_loads_the_weights_a_command_was_given(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from PIL import Image
    from safetensors.torch import save_file

    from jaxdissect import cli
    from jaxdissect.pipeline.resolve import load_model
    from jaxdissect.runtime.fingerprint import fingerprint
    from jaxdissect.torch_compat import torchvision
    torch.manual_seed(5)
    net = torchvision().models.squeezenet1_1(weights=None).eval()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, "net.safetensors")
    rng = np.random.default_rng(1)
    for i, name in enumerate(("tench", "tench", "goldfish", "goldfish")):
        os.makedirs(f"data/{name}", exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(
            f"data/{name}/{i}.png")
    model = "torchvision:squeezenet1_1"
    assert cli.main(["dissect", "--model", model, "--weights", "net.safetensors",
                     "--data", "data", "--segmenter", "py:tests.support.tiny_nets:TinySegmenter",
                     "--num-images", "4", "--batch-size", "4", "--topk", "2",
                     "--out", "../out", "--no-progress"]) == 0
    weights = str(tmp_path / "work" / "net.safetensors")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["model_spec"], report["model_weights"]) == (model, weights)
    monkeypatch.chdir(tmp_path)                     # serve runs elsewhere
    live = Results("out").get("0").live()
    want = load_model(model, weights)
    assert fingerprint(live.spec.params) == fingerprint(want.params)
    assert fingerprint(live.spec.params) != fingerprint(load_model(model, "random").params)
    x = np.random.default_rng(0).random((1, 224, 224, 3), np.float32)
    with torch.no_grad():
        ref = net(torch.tensor(np.asarray(want.preprocess(x)).transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(live.spec.run(live.spec.params, x)[0], ref, rtol=1e-4,
                               atol=1e-5)
    shutil.move(weights, tmp_path / "elsewhere.safetensors")
    with pytest.raises(LookupError, match=r"--weights \.=FILE"):
        Results("out").get("0").live()
    moved = Results("out", weights={"": str(tmp_path / "elsewhere.safetensors")})
    assert fingerprint(moved.get("0").live().spec.params) == fingerprint(want.params)


def test_serve_takes_weights_per_dissection(tmp_path, capsys):
    from jaxdissect import cli
    fake_results(str(tmp_path))
    assert cli.main(["serve", str(tmp_path), "--port", "0", "--weights",
                     "nowhere=/w.safetensors"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weights names no dissection: ['nowhere']" in err[0], err
