"""Image folders in the reference's Places layout, and the tfds source's clear error."""

import importlib.util

import numpy as np
import pytest
from PIL import Image

from jaxdissect import cli
from jaxdissect.data.folder import ImageFolderSource
from tests.support.tiny_checkpoints import tiny_vgg_pth


def make_folder(root, n_per_class=3):
    rng = np.random.default_rng(0)
    for c in ("b_forest", "a_beach"):
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            size = (300, 260) if i % 2 else (256, 320)
            Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(
                root / c / f"{i}.png")


def test_folder_source_resize_and_crop(tmp_path):
    make_folder(tmp_path / "val")
    src = ImageFolderSource(str(tmp_path / "val"))
    assert src.class_names == ("a_beach", "b_forest") and src.num_examples == 6
    b = src.batch(1, 4)
    assert b["image"].shape == (3, 224, 224, 3) and b["label"].tolist() == [0, 0, 1]
    # oracle: PIL resize to 256x256 (bilinear) then the central 224x224
    im = Image.open(tmp_path / "val" / "a_beach" / "1.png").convert("RGB")
    want = np.asarray(im.resize((256, 256), Image.BILINEAR), np.float32)[16:240, 16:240] / 255
    np.testing.assert_allclose(b["image"][0], want, atol=1e-6)
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolderSource(str(tmp_path / "val" / "a_beach"))
    with pytest.raises(FileNotFoundError):
        ImageFolderSource(str(tmp_path / "missing"))


@pytest.mark.slow
def test_dissect_on_a_folder(tmp_path):
    make_folder(tmp_path / "places" / "val")
    tiny_vgg_pth(str(tmp_path / "m.pth"))
    out = tmp_path / "res"
    assert cli.main(["dissect", "--model", str(tmp_path / "m.pth"), "--data",
                     str(tmp_path / "places"),
                     "--segmenter", "py:tests.support.tiny_nets:TinySegmenter",
                     "--out", str(out), "--no-progress", "--batch-size", "4"]) == 0
    assert (out / "report.html").is_file()
    assert np.load(out / "iou.npy").shape[1] == 6


@pytest.mark.skipif(importlib.util.find_spec("tensorflow_datasets") is not None,
                    reason="tensorflow-datasets is installed")
def test_tfds_without_tensorflow_datasets_is_a_clear_error(tmp_path, capsys):
    tiny_vgg_pth(str(tmp_path / "m.pth"))
    assert cli.main(["dissect", "--model", str(tmp_path / "m.pth"), "--data",
                     "tfds:places365_small", "--segmenter", "netpqc", "--out",
                     str(tmp_path / "o")]) == 2
    assert "tensorflow-datasets" in capsys.readouterr().err
