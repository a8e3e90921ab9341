"""PyTorch models through the commands: torchvision:resnet18 with random weights and
timm:vit_tiny_patch16_224 with a .safetensors file the test writes through dissect,
ablate and attack; a torch generator (a py: factory returning ModelSpec.from_torch)
through intervene and paint; a py: factory returning a bare torch module."""

import importlib.util
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("torchax") is None or importlib.util.find_spec("timm") is None:
    pytest.skip("torchax and timm are not installed", allow_module_level=True)
from PIL import Image  # noqa: E402

from jaxdissect import cli  # noqa: E402

SEG = "py:tests.support.tiny_nets:TinySegmenter"
COMMON = ["--segmenter", SEG, "--batch-size", "4", "--no-progress"]


def image_folder(root, spec, num=8, size=224, seed=0):
    """``num`` random images, half in the folder of the class ``spec`` predicts most
    (correctly classified: the attack's source), half in another class's (the attack's
    target; two classes give the ablation's per-class accuracies a meaning)."""
    rng = np.random.RandomState(seed)
    images = [np.asarray(Image.fromarray(rng.randint(0, 256, (size // 8, size // 8, 3))
                                         .astype(np.uint8)).resize((size, size), Image.NEAREST))
              for _ in range(num)]
    x = np.stack(images).astype(np.float32) / 255
    pred = np.asarray(spec.run(spec.params, x)[0]).argmax(1)
    source = int(np.bincount(pred).argmax())
    target = (source + 1) % len(spec.class_names)
    order = np.argsort(pred != source, kind="stable")      # predicted as source first
    for rank, i in enumerate(order):
        c = spec.class_names[source if rank < num // 2 else target]
        (root / c).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(root / c / f"{i}.png")
    assert (pred == source).sum() >= 1
    return root, spec.class_names[source], spec.class_names[target]


def run(argv):
    assert cli.main(argv) == 0, argv


def classifier_commands(model, extra, folder, out, source, target, units):
    run(["dissect", "--model", model, *extra, "--data", str(folder), "--num-images", "8",
         "--out", str(out / "dissect"), *COMMON])
    assert json.load(open(out / "dissect" / "report.json"))
    assert units in np.load(out / "dissect" / "iou.npy").shape
    run(["ablate", "--model", model, *extra, "--data", str(folder), "--num-images", "8",
         "--train-images", "8", "--ks", "1,4", "--chunk", "2", "--out", str(out / "ablate"),
         *COMMON])
    assert json.load(open(out / "ablate" / "ablate" / "ablation.json"))
    run(["attack", "--model", model, *extra, "--data", str(folder), "--source", source,
         "--target", target, "--num-images", "1", "--search-images", "8", "--steps", "2",
         "--top", "2", "--rank-images", "4", "--dissect-images", "4", "--out",
         str(out / "attack"), *COMMON])
    assert (out / "attack" / "attack.json").exists()


@pytest.mark.slow
def test_torchvision_resnet18_random_weights(tmp_path):
    from jaxdissect.models import torch_zoo
    spec = torch_zoo.load("torchvision:resnet18", weights="random")
    assert spec.fingerprint == torch_zoo.load("torchvision:resnet18", "random").fingerprint
    folder, source, target = image_folder(tmp_path / "data", spec)
    classifier_commands("torchvision:resnet18", ["--weights", "random"], folder,
                        tmp_path, source, target, 512)


@pytest.mark.slow
def test_timm_vit_from_a_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    from jaxdissect.models import torch_zoo
    from jaxdissect.torch_compat import torchvision
    torchvision()                    # before timm, which imports torchvision
    import timm
    torch.manual_seed(3)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    with torch.no_grad():
        vit.head.weight.normal_(0, 0.02)
    path = str(tmp_path / "vit.safetensors")
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, path)
    spec = torch_zoo.load("timm:vit_tiny_patch16_224", weights=path)
    x = np.random.RandomState(0).rand(1, 224, 224, 3).astype(np.float32)
    with torch.no_grad():
        ref = vit(torch.tensor(np.asarray(spec.preprocess(x)).transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(spec.run(spec.params, x)[0], ref, rtol=1e-4, atol=1e-5)
    assert spec.default_layer == "blocks.11" and len(spec.class_names) == 1000
    folder, source, target = image_folder(tmp_path / "data", spec)
    classifier_commands("timm:vit_tiny_patch16_224", ["--weights", path], folder,
                        tmp_path, source, target, 192)


@pytest.mark.slow
def test_torch_generator_through_intervene_and_paint(tmp_path):
    run(["intervene", "--model", "py:tests.support.torch_user_models:generator", "--num-samples",
         "16", "--max-remove", "2", "--insert-units", "2", "--remove", "green", "--insert",
         "blue", "--sweep-samples", "4", "--removal-samples", "4", "--insertion-samples", "4",
         "--chunk", "4", "--out", str(tmp_path / "intervene"), *COMMON])
    assert (tmp_path / "intervene" / "intervene" / "intervention.json").exists()
    run(["paint", "--model", "py:tests.support.torch_user_models:generator", "--num-samples", "12",
         "--num-z", "2", "--units", "2", "--edit", "green:off:0,0,1,0.5", "--out",
         str(tmp_path / "paint"), *COMMON])


def test_py_factory_may_return_a_torch_module(tmp_path):
    from jaxdissect.pipeline.resolve import load_model
    spec = load_model("py:tests.support.torch_user_models:classifier")
    assert spec.kind == "classifier" and spec.default_layer == "features.3"
    assert spec.input_size == (224, 224)
    from tests.support.torch_user_models import classifier
    m = classifier().eval()
    x = np.random.RandomState(0).rand(2, 224, 224, 3).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.tensor(np.asarray(spec.preprocess(x)).transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(spec.run(spec.params, x)[0], ref, rtol=1e-4, atol=1e-6)


def test_bad_weights_are_named(tmp_path, capsys):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"\xff" * 16)
    assert cli.main(["dissect", "--model", "torchvision:resnet18", "--weights", str(bad),
                     "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "w.safetensors" in err[0], err
    assert cli.main(["dissect", "--model", "torchvision:nosuchnet", "--weights", "random",
                     "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "torchvision has no model 'nosuchnet'" in capsys.readouterr().err
    assert cli.main(["dissect", "--model", "world", "--weights", "random",
                     "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "--weights applies to" in capsys.readouterr().err
