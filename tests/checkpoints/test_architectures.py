"""The architecture registry: each built-in layout's state dict is recognised from its
keys alone; torchvision's and timm's names convert to exactly what the reference's
names do (VGG-16) or to a network equal to torch's (a timm ViT from .safetensors); an
architecture added in one module (``tests/support/tiny_architecture.py``) loads through the
same detection, readers, store and CLI; ambiguous or unknown key sets are refused."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from jaxdissect.checkpoints import architectures as archs
from jaxdissect.checkpoints.convert import CheckpointMismatch, flatten_params
from jaxdissect.checkpoints.files import spec_from_file
from jaxdissect.errors import UserError
from tests.support.reference_torch import state_dict_numpy, torch_proggan, torch_vgg16
from tests.support.torch_classifiers import (
    rel_err,
    run_hooked,
    torch_alexnet_reference,
    torch_alexnet_torchvision,
    torch_oldresnet,
    torch_resnet,
    torch_vit,
)

VGG_WIDTHS, VGG_FC, VGG_CLASSES = (4, 8, 8, 16, 16), 12, 5
VGG_CONVS = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
             "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"]
VGG_TV_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision's vgg16


def vgg_reference():
    return state_dict_numpy(torch_vgg16(VGG_WIDTHS, VGG_FC, VGG_CLASSES, seed=3))


def vgg_torchvision(sd):
    names = {f"features.{c}": f"features.{i}" for c, i in zip(VGG_CONVS, VGG_TV_INDEX)}
    names.update({"classifier.fc6": "classifier.0", "classifier.fc7": "classifier.3",
                  "classifier.fc8a": "classifier.6"})
    return {names[k.rsplit(".", 1)[0]] + "." + k.rsplit(".", 1)[1]: v for k, v in sd.items()}


def vgg_timm(sd):
    """timm's ``_filter_fn`` applied to a torchvision state dict: fc6 and fc7 become
    7x7 and 1x1 convolutions of ``pre_logits``, fc8 ``head.fc``."""
    out = {}
    for k, v in vgg_torchvision(sd).items():
        if k == "classifier.0.weight":
            v = v.reshape(-1, VGG_WIDTHS[-1], 7, 7)
        if k == "classifier.3.weight":
            v = v.reshape(-1, VGG_FC, 1, 1)
        out[k.replace("classifier.0", "pre_logits.fc1").replace(
            "classifier.3", "pre_logits.fc2").replace("classifier.6", "head.fc")] = v
    return out


def vit_timm(sd, depth):
    """torchvision ViT names -> timm's ``VisionTransformer`` names, written out."""
    names = {"class_token": "cls_token", "encoder.pos_embedding": "pos_embed",
             "conv_proj.weight": "patch_embed.proj.weight",
             "conv_proj.bias": "patch_embed.proj.bias", "encoder.ln.weight": "norm.weight",
             "encoder.ln.bias": "norm.bias", "heads.head.weight": "head.weight",
             "heads.head.bias": "head.bias"}
    for i in range(depth):
        tv, tm = f"encoder.layers.encoder_layer_{i}.", f"blocks.{i}."
        for a, b in (("ln_1", "norm1"), ("ln_2", "norm2"), ("mlp.0", "mlp.fc1"),
                     ("mlp.3", "mlp.fc2"), ("self_attention.out_proj", "attn.proj")):
            for leaf in ("weight", "bias"):
                names[f"{tv}{a}.{leaf}"] = f"{tm}{b}.{leaf}"
        names[f"{tv}self_attention.in_proj_weight"] = f"{tm}attn.qkv.weight"
        names[f"{tv}self_attention.in_proj_bias"] = f"{tm}attn.qkv.bias"
    assert set(names) == set(sd)
    return {names[k]: v for k, v in sd.items()}


def old_proggan(sd):
    n = sum(k.endswith(".conv.weight") and k.startswith("layer") for k in sd)
    out = {}
    for k, v in sd.items():
        head, rest = k.split(".", 1)
        out[f"features.{int(head[5:]) - 1}.{rest}" if head.startswith("layer")
            else f"output.{rest}"] = v
    assert len([k for k in out if k.startswith("features.")]) == 2 * n
    return out


@pytest.mark.slow
def test_each_builtin_layout_is_recognised_from_its_keys():
    vgg = vgg_reference()
    gan = state_dict_numpy(torch_proggan((8, 8, 4), seed=1))
    vit = state_dict_numpy(torch_vit(seed=2, image_size=32, depth=1, hidden=192, heads=3,
                                     mlp_dim=8, num_classes=3))
    cases = {
        "vgg16": [vgg, vgg_torchvision(vgg), vgg_timm(vgg)],
        "proggan": [gan, old_proggan(gan)],
        "resnet": [state_dict_numpy(torch_resnet("basic", (1, 1, 1, 1), 4, seed=1)),
                   {"module." + k: v for k, v in state_dict_numpy(torch_oldresnet(
                       (1, 1, 1, 1), 4, seed=1)).items()}],
        "alexnet": [state_dict_numpy(torch_alexnet_reference(4, widths=(8, 8, 8, 8, 8),
                                                             fc_width=8)),
                    state_dict_numpy(torch_alexnet_torchvision(4))],
        "vit": [vit, vit_timm(vit, 1)],
    }
    for arch, dicts in cases.items():
        for sd in dicts:
            assert archs.detect_architecture(sd) == arch, sorted(sd)[:3]
            config, _ = archs.convert_state_dict(sd)  # no arch given: detected
            assert config == archs.convert_state_dict(sd, arch)[0]
    with pytest.raises(CheckpointMismatch, match="not a state dict of a known "
                                                 "architecture.*looked for alexnet: "):
        archs.detect_architecture({"weight": np.zeros(3)}, "x.pth")


def test_torchvision_and_timm_vgg_names_convert_like_the_reference():
    ref = vgg_reference()
    want_config, want = archs.convert_state_dict(ref, "vgg16")
    want = flatten_params(want)
    for sd in (vgg_torchvision(ref), vgg_timm(ref)):
        config, got = archs.convert_state_dict(sd)
        got = flatten_params(got)
        assert config == want_config and set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.slow
def test_timm_vit_from_safetensors_equals_torch(tmp_path):
    tm = torch_vit(seed=4, image_size=32, depth=2, hidden=192, heads=3, mlp_dim=16,
                   num_classes=5)
    sd = vit_timm({k: v.contiguous() for k, v in tm.state_dict().items()}, 2)
    path = tmp_path / "vit_tiny.safetensors"
    save_file(sd, str(path))
    spec = spec_from_file(path)
    assert spec.name == str(path) and spec.input_size == (32, 32)
    assert spec.default_layer == "encoder_layer_1"
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    out, acts = spec.run(spec.params, x, capture=("encoder_layer_0",))
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    t_out, t_acts = run_hooked(tm, (x - mean) / std,
                               {"encoder_layer_0": "encoder.layers.encoder_layer_0"})
    assert rel_err(out, t_out) < 1e-4
    assert rel_err(acts["encoder_layer_0"], t_acts["encoder_layer_0"]) < 1e-4


@pytest.fixture
def tiny():
    import tests.support.tiny_architecture as module
    archs.register(module.ARCHITECTURE, replace=True)
    yield module
    archs.unregister("tiny")


class TorchTiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.head = torch.nn.Linear(6, 2)

    def forward(self, x):
        return self.head(torch.relu(self.stem(x)).mean((2, 3)))


@pytest.mark.slow
def test_an_architecture_added_in_one_module_loads_like_the_builtins(tiny, tmp_path):
    from jaxdissect.checkpoints.store import load_converted
    from jaxdissect.cli import main
    tm = TorchTiny().eval()
    torch.save(tm.state_dict(), tmp_path / "t.pth")
    save_file(tm.state_dict(), str(tmp_path / "t.safetensors"))
    x = np.random.default_rng(1).random((3, 8, 8, 3), dtype=np.float32)
    with torch.no_grad():
        want = tm(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert "tiny" in archs.architecture_names()
    for name in ("t.pth", "t.safetensors"):
        spec = spec_from_file(tmp_path / name)
        assert spec.layer_names == ("stem",) and isinstance(spec.module, tiny.TinyNet)
        assert (spec.module.width, spec.module.num_classes) == (6, 2)
        np.testing.assert_allclose(spec.run(spec.params, x)[0], want, rtol=1e-5, atol=1e-6)
    assert main(["weights", "convert", str(tmp_path / "t.safetensors"),
                 "--out", str(tmp_path / "conv")]) == 0
    model, tree, meta = load_converted(tmp_path / "conv")
    assert meta["arch"] == "tiny" and meta["config"] == {"width": 6, "num_classes": 2}
    out = archs.spec_from_converted("tiny", model, tree, "tiny").run(
        archs.as_variables("tiny", tree), x)[0]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_overlapping_signatures_are_refused_by_name(tiny):
    other = archs.Architecture(name="tiny2", build=tiny.TinyNet,
                               signatures=(("stem.weight",),), read_config=tiny.read_config,
                               example_input=lambda c: (1, 8, 8, 3), spec=tiny.spec)
    archs.register(other)
    try:
        with pytest.raises(CheckpointMismatch, match=r"fit the architectures \['tiny', "
                                                     r"'tiny2'\]; name one"):
            archs.detect_architecture({"stem.weight": 0, "head.weight": 0}, "t.pth")
        with pytest.raises(ValueError, match="already registered"):
            archs.register(archs.Architecture(
                name="tiny2", build=tiny.TinyNet, signatures=(("x",),),
                read_config=tiny.read_config, example_input=lambda c: (1, 8, 8, 3),
                spec=tiny.spec))
    finally:
        archs.unregister("tiny2")


def test_spec_from_file_refuses_in_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        spec_from_file(tmp_path / "none.safetensors")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(UserError, match="not a weights file"):
        spec_from_file(tmp_path / "w.npz")
    save_file({"weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UserError, match="other.safetensors: not a state dict of a known"):
        spec_from_file(tmp_path / "other.safetensors")
