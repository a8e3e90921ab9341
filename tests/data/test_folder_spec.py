"""Image folders read through the model spec: the world classifier sees whole world
images from a Places-layout folder and scores as on the world itself; classes map to
the model's class names by folder name."""

import numpy as np
import pytest
from PIL import Image

from jaxdissect import pipeline as C
from jaxdissect.cli import UserError
from jaxdissect.data.folder import ImageFolderSource
from jaxdissect.world import WorldSource
from jaxdissect.world.scenes import CLASS_NAMES


def write_world_folder(root, n, seed):
    batch = WorldSource(n, seed=seed).batch(0, n)
    for i, (img, label) in enumerate(zip(batch["image"], batch["label"])):
        d = root / CLASS_NAMES[label]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(d / f"{i:04d}.png")


def accuracy(spec, source):
    b = source.batch(0, source.num_examples)
    pred = np.asarray(spec.run(spec.params, b["image"])[0]).argmax(1)
    return float((pred == b["label"]).mean())


@pytest.mark.slow
def test_world_classifier_on_a_places_folder_equals_world_data(tmp_path):
    n, seed = 330, 17
    write_world_folder(tmp_path / "val", n, seed)
    spec = C.load_model("world")
    folder = C.load_data(str(tmp_path), spec, None, seed)
    assert folder.class_names == tuple(CLASS_NAMES) and folder.num_examples == n
    world = C.load_data("world", spec, n, seed)
    a_folder, a_world = accuracy(spec, folder), accuracy(spec, world)
    assert a_world > 0.9
    assert abs(a_folder - a_world) <= 0.005, (a_folder, a_world)


def test_folder_policies_and_class_mapping(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("forest", "beach"):
        (tmp_path / c).mkdir()
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(
            tmp_path / c / "0.png")
    src = ImageFolderSource(str(tmp_path), size=(32, 32), policy="stretch",
                            class_names=("beach", "desert", "forest"))
    b = src.batch(0, 2)
    assert b["label"].tolist() == [0, 2]          # the model's indices, by name
    im = Image.open(tmp_path / "beach" / "0.png").convert("RGB")
    want = np.asarray(im.resize((32, 32), Image.BILINEAR), np.float32) / 255
    np.testing.assert_allclose(b["image"][0], want, atol=1e-6)
    with pytest.raises(ValueError, match=r"folders \['forest'\] are not classes"):
        ImageFolderSource(str(tmp_path), class_names=("beach", "desert"))
    with pytest.raises(ValueError, match="policy"):
        ImageFolderSource(str(tmp_path), policy="squash")


def test_cli_refuses_a_folder_whose_class_the_model_lacks(tmp_path, capsys):
    from jaxdissect import cli
    (tmp_path / "val" / "unicorn").mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "val" / "unicorn" / "a.png")
    assert cli.main(["ablate", "--model", "world", "--data", str(tmp_path),
                     "--out", str(tmp_path / "o")]) == 2
    assert "unicorn" in capsys.readouterr().err
    with pytest.raises(UserError, match="unicorn"):
        C.load_data(str(tmp_path), C.load_model("world"), None, 0)
