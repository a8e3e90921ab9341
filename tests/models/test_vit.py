"""ViT-B/16 in the torchvision layout against a PyTorch module with the published
state-dict layout (random init, real size), saved by torch.save in both formats and
read by jaxdissect's reader: logits, every encoder layer, ``ln`` and ``head`` within
1e-4 relative (forward hooks). The older torchvision MLP naming; the patch-token map."""

import jax
import numpy as np
import pytest
import torch

from jaxdissect.checkpoints import CheckpointMismatch, convert_state_dict, model_from_config
from jaxdissect.checkpoints.architectures import as_variables
from jaxdissect.checkpoints.pth import load_state_dict
from jaxdissect.models.vit import tokens_to_map
from tests.support.flax_capture import run_captured
from tests.support.torch_classifiers import rel_err, run_hooked, save_both, torch_vit


@pytest.fixture(scope="module")
def vit_b16(tmp_path_factory):
    tm = torch_vit(seed=1)
    paths = save_both(tm.state_dict(), tmp_path_factory.mktemp("vit"), "vit_b_16")
    return dict(torch=tm, paths=paths)


@pytest.mark.slow
def test_vit_b16_matches_torch_at_every_layer(vit_b16):
    cfg, var = convert_state_dict(load_state_dict(vit_b16["paths"]["zip"]), "vit")
    assert cfg == {"patch": 16, "hidden": 768, "depth": 12, "heads": 12, "mlp_dim": 3072,
                   "num_classes": 1000, "image_size": 224}
    model = model_from_config("vit", cfg)
    paths = model.layer_paths
    x = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
    out, acts = run_captured(model, as_variables("vit", var), x, paths.values())
    t_logits, t_acts = run_hooked(vit_b16["torch"], x, {
        **{f"encoder_layer_{i}": f"encoder.layers.encoder_layer_{i}" for i in range(12)},
        "ln": "encoder.ln", "head": "heads.head"})
    assert rel_err(out, t_logits) < 1e-4
    assert list(paths) == [f"encoder_layer_{i}" for i in range(12)] + ["ln", "head"]
    for name, path in paths.items():
        assert acts[path].shape == t_acts[name].shape, name
        assert rel_err(acts[path], t_acts[name]) < 1e-4, name
    grid = tokens_to_map(acts[paths["encoder_layer_11"]], model.grid)
    assert grid.shape == (2, 14, 14, 768)
    # Patch (row 3, column 5) is token 1 + 3 * 14 + 5: the class token is not on the map.
    np.testing.assert_array_equal(grid[:, 3, 5], acts[paths["encoder_layer_11"]][:, 48])


def test_legacy_file_and_older_mlp_naming_give_the_same_variables(vit_b16, tmp_path):
    cfg, var = convert_state_dict(load_state_dict(vit_b16["paths"]["legacy"]), "vit")
    old = {k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v
           for k, v in vit_b16["torch"].state_dict().items()}
    assert "encoder.layers.encoder_layer_4.mlp.linear_2.bias" in old
    torch.save(old, tmp_path / "old.pth")
    cfg2, var2 = convert_state_dict(load_state_dict(tmp_path / "old.pth"), "vit")
    ref = convert_state_dict(load_state_dict(vit_b16["paths"]["zip"]), "vit")[1]
    assert cfg == cfg2
    for tree in (var, var2):
        for (pa, a), (pb, b) in zip(jax.tree_util.tree_leaves_with_path(tree),
                                    jax.tree_util.tree_leaves_with_path(ref)):
            assert pa == pb and np.array_equal(a, b), pa


def test_tokens_to_map_and_errors():
    with pytest.raises(ValueError, match=r"1 \+ 14x14 tokens, got 196"):
        tokens_to_map(np.zeros((1, 196, 4)), 14)
    small = {k: v.numpy() for k, v in torch_vit(seed=2, image_size=32, depth=1, mlp_dim=8,
                                                num_classes=3).state_dict().items()}
    cfg, var = convert_state_dict(small, "vit")
    assert cfg["image_size"] == 32 and cfg["depth"] == 1
    model = model_from_config("vit", cfg)
    with pytest.raises(ValueError, match="takes 32x32 images"):
        model.apply(var, np.zeros((1, 64, 64, 3), np.float32))
    del small["encoder.layers.encoder_layer_0.self_attention.in_proj_bias"]
    with pytest.raises(CheckpointMismatch, match="- encoder.layers.encoder_layer_0."
                                                 "self_attention.in_proj_bias"):
        convert_state_dict(small, "vit")
    with pytest.raises(CheckpointMismatch, match="not a torchvision or timm ViT checkpoint"):
        convert_state_dict({"conv1.weight": np.zeros(3)}, "vit")
