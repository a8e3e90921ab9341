"""``jaxdissect describe`` on a tiny VGG-16 .pth and world images with a py: image-text
model: its labels against PyTorch activations scored by the NumPy SoftWPMI
transcription, the report beside the mask-based labels, and bad input."""

import json
import os

import numpy as np
import pytest

from jaxdissect import cli
from tests.experiments.test_describe import OneHotText, numpy_soft_wpmi
from tests.support.tiny_checkpoints import tiny_vgg_pth, vgg_forward

N = 24
WORDS = ["red", "green", "blue"]


def tiny_imagetext():
    return OneHotText()


@pytest.fixture(scope="module")
def run_describe(tmp_path_factory):
    d = tmp_path_factory.mktemp("describe")
    torch_model = tiny_vgg_pth(str(d / "tiny_vgg.pth"))
    words = d / "words.txt"
    words.write_text("# colours\n" + "\n".join(WORDS) + "\n")
    out = d / "res"
    argv = ["describe", "--model", str(d / "tiny_vgg.pth"), "--num-images", str(N),
            "--seed", "3", "--concepts", str(words), "--top-k", "6", "--batch-size", "8",
            "--imagetext", "py:tests.cli.test_describe:tiny_imagetext", "--out", str(out),
            "--no-progress"]
    return torch_model, d, out, argv


@pytest.mark.slow
def test_labels_match_torch_numpy_and_report(run_describe, capsys):
    torch_model, d, out, argv = run_describe
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "agreement with mask-based labels" in printed
    summary = json.loads((out / "describe.json").read_text())
    # the command reads the world at the VGG's input size (rendered at 128, resized)
    from jaxdissect.pipeline.resolve import load_data, load_model
    images = load_data("world", load_model(argv[2]), N, 3).batch(0, N)["image"]
    assert images.shape[1:3] == (224, 224)
    acts = vgg_forward(torch_model, images, stop="conv5_3").astype(np.float64).mean((1, 2))
    emb = images.reshape(N, -1, 3).mean(1) + 0.01
    P = (emb / np.linalg.norm(emb, axis=1, keepdims=True))
    want = numpy_soft_wpmi(P, acts, 6, 10.0, 1.0, 0.998, 0.97, 1e-7).argmax(1)
    got = [WORDS.index(u["label"]) for u in summary["units"]]
    np.testing.assert_array_equal(got, want)
    assert summary["comparison"]["units"] == acts.shape[1]
    assert all("dissect_label" in u for u in summary["units"])
    page = (out / "describe.html").read_text()
    assert "masks:" in page and "unit 0:" in page
    assert os.path.isfile(out / "dissect" / "report.html")
    assert os.path.isfile(out / "top" / "unit_0000.png")


@pytest.mark.parametrize("extra, msg", [
    (["--concepts", "/nonexistent/words.txt"], "cannot read"),
    (["--imagetext", "py:os:getcwd"], "image-text model"),
    (["--top-k", "0"], "--top-k must be positive"),
])
def test_bad_input_exits_2(run_describe, extra, msg, capsys):
    _, _, _, argv = run_describe
    assert cli.main(argv + extra) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
