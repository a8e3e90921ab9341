"""Parity of the Flax segmentation networks and segmenters with PyTorch oracles.

The oracles (``tests/support/torch_segmodels.py``) have the reference's state-dict layout
and real channel counts (ResNet-50 UPerNet, fpn_dim 512; dilated ResNet-18 +
PPMDeepsup), random weights and BatchNorm statistics, evaluation mode. Images
are small to keep the test fast.
"""

import numpy as np
import pytest
import torch

from jaxdissect.checkpoints.convert import CheckpointMismatch
from jaxdissect.models.ppm import DilatedPPMNet
from jaxdissect.models.segmenter_convert import colour_params, unified_parsing_params
from jaxdissect.models.upernet import UnifiedParsingNet
from jaxdissect.segmentation import (
    MergedSegmenter,
    SemanticLabelData,
    SemanticSegmenter,
    UnifiedLabelData,
    UnifiedParsingSegmenter,
)
from jaxdissect.taps import run
from tests.support.segmenter_oracles import (
    quad_numpy,
    semantic_rules_numpy,
    torch_semantic_scores,
    torch_upp_scores,
    upp_numbering,
    upp_rules_numpy,
)
from tests.support.torch_segmodels import colour_modules, state_dict_numpy, upp_modules

UPP_LABELS = {
    "object": ["-", "wall", "building", "sky", "floor", "tree", "door", "person", "window",
               "car", "road"],
    "material": ["-", "brick", "glass", "wood", "fabric"],
    "scene": ["street", "kitchen", "bedroom"],
    "part": ["door", "window", "roof", "head", "arm", "wheel", "cloud"],
    "object_part": {"building": ["door", "window", "roof"], "sky": ["cloud"],
                    "person": ["head", "arm"], "car": ["wheel", "door", "window"]},
}
COLOUR_LABELS = {
    "labels": [{"name": "-", "category": "color"}, {"name": "black", "category": "color"},
               {"name": "white", "category": "color"}, {"name": "red", "category": "color"},
               {"name": "shade", "category": "color", "internal": True},
               {"name": "green", "category": "color"}, {"name": "blue", "category": "color"}],
    "categories": [{"name": "color"}],
    "imageformat": {"byteorder": "BGR", "mean": [0.4, 0.45, 0.5], "stdev": [0.25, 0.2, 0.22]},
    "segsizes": [48],
}


def nr_classes(labels):
    return dict(object=len(labels["object"]), material=len(labels["material"]),
                scene=len(labels["scene"]),
                part=sum(len(p) for p in labels["object_part"].values()))


@pytest.fixture(scope="module")
def upp():
    torch.manual_seed(0)
    enc, dec = upp_modules(nr_classes(UPP_LABELS), seed=3)
    data = UnifiedLabelData.from_json(UPP_LABELS)
    model = UnifiedParsingNet(len(data.object), data.num_part_channels, len(data.material))
    params = unified_parsing_params(model, state_dict_numpy(enc), state_dict_numpy(dec))
    return enc, dec, data, model, params


@pytest.fixture(scope="module")
def colour():
    enc, dec = colour_modules(len(COLOUR_LABELS["labels"]), seed=5)
    data = SemanticLabelData.from_json(COLOUR_LABELS)
    params = colour_params(DilatedPPMNet(len(data.labels)), state_dict_numpy(enc),
                           state_dict_numpy(dec))
    return enc, dec, data, params


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def images(b, h, w, seed):
    return np.random.RandomState(seed).rand(b, h, w, 3).astype(np.float32)


def assert_same_except_ties(ours, ref, scores, tol=1e-5):
    """Label maps equal wherever the oracle's best score is not (nearly) tied."""
    diff = ours != ref
    if diff.any():
        top2 = np.sort(scores, axis=1)[:, -2:]
        gap = (top2[:, 1] - top2[:, 0])
        assert np.all(gap[diff] <= tol), f"{diff.sum()} labels differ at untied pixels"


@pytest.mark.slow
def test_upernet_logits_match_pytorch(upp):
    enc, dec, _, model, params = upp
    x = np.random.RandomState(1).randn(1, 64, 64, 3).astype(np.float32) * 60
    with torch.no_grad():
        ref = dec(enc(torch.from_numpy(x.transpose(0, 3, 1, 2))))
    out, acts = run(model.apply, {"params": params}, x, capture=("layer4", "fusion"),
                    aliases=model.layer_paths)
    for k in ("object", "part", "material"):
        r = ref[k].numpy().transpose(0, 2, 3, 1)
        assert out[k].shape == r.shape
        assert rel_err(np.asarray(out[k]), r) < 1e-4, k
    assert acts["layer4"].shape == (1, 2, 2, 2048) and acts["fusion"].shape == (1, 16, 16, 512)


@pytest.mark.slow
def test_colour_net_logits_match_pytorch(colour):
    enc, dec, data, params = colour
    x = np.random.RandomState(2).randn(1, 64, 64, 3).astype(np.float32)
    with torch.no_grad():
        ref = dec(enc(torch.from_numpy(x.transpose(0, 3, 1, 2)))).numpy().transpose(0, 2, 3, 1)
    out = DilatedPPMNet(len(data.labels)).apply({"params": params}, x)
    assert out.shape == ref.shape == (1, 8, 8, len(data.labels))
    assert rel_err(np.asarray(out), ref) < 1e-4


@pytest.mark.slow
def test_unified_segmenter_matches_reference_pipeline(upp):
    """Two sizes (adaptive pooling up and down), downsampling, parts, quadrant split."""
    enc, dec, data, _, params = upp
    img = images(1, 56, 56, seed=4)
    seg = UnifiedParsingSegmenter(data, params, segsizes=(64, 48), downsample=2, quad=True)
    ours = np.asarray(seg(img))
    assert ours.shape == (1, 5, 28, 28) and ours.dtype == np.int32
    sc = torch_upp_scores(enc, dec, UPP_LABELS, img, (64, 48), 2)
    owners = list(UPP_LABELS["object_part"])
    ref = upp_rules_numpy(UPP_LABELS, sc["object"], sc["material"], [sc[o] for o in owners],
                          all_parts=True, quad=True)
    assert_same_except_ties(ours[:, 0], ref[:, 0], sc["object"])
    assert_same_except_ties(ours[:, 1], ref[:, 1], sc["material"])
    part_ok = ours[:, 0] == ref[:, 0]  # parts compared where objects agree
    np.testing.assert_array_equal(ours[:, 2][part_ok], ref[:, 2][part_ok])
    quad = quad_numpy(ours[:, 0], len(data.object) - 1)
    np.testing.assert_array_equal(ours[:, 3:], quad)
    assert len(np.unique(ours[:, 0])) > 1  # the test saw more than one object
    names, cats = zip(*upp_numbering(UPP_LABELS, all_parts=True, quad=True)[0])
    assert seg.labels.names == names and seg.labels.categories[1:] == cats[1:]
    assert len(names) == 1 + 10 * 5 + 4 + 5  # objects x5, materials, roof/cloud/head/arm/wheel


def test_colour_segmenter_matches_reference_pipeline(colour):
    enc, dec, data, params = colour
    img = images(1, 64, 64, seed=6)
    seg = SemanticSegmenter(data, params, downsample=2)  # segsizes [48] from labels.json
    ours = np.asarray(seg(img))
    assert ours.shape == (1, 1, 32, 32)
    scores = torch_semantic_scores(enc, dec, COLOUR_LABELS, img, 2)
    ref = semantic_rules_numpy(COLOUR_LABELS, scores)
    assert_same_except_ties(ours, ref, scores)


@pytest.mark.slow
def test_merged_segmenter_numbering(upp, colour):
    _, _, udata, _, uparams = upp
    _, _, cdata, cparams = colour
    u = UnifiedParsingSegmenter(udata, uparams, segsizes=(32,), downsample=1)
    c = SemanticSegmenter(cdata, cparams, downsample=1, segsizes=(32,))
    m = MergedSegmenter([u, c])
    img = images(1, 32, 32, seed=7)
    out, us, cs = np.asarray(m(img)), np.asarray(u(img)), np.asarray(c(img))
    assert out.shape == (1, 4, 32, 32) and m.num_layers == 4
    np.testing.assert_array_equal(out[:, :3], us)
    off = len(u.labels)
    np.testing.assert_array_equal(out[:, 3:], np.where(cs > 0, cs + off, 0))
    # the reference's numbering: colour label j is off + j, with its "-" slot kept
    assert m.labels.names[off + 1:] == c.labels.names[1:]
    assert m.labels.names[off] == "-" and m.labels.categories[off] == "color"
    assert m.categories == ("object", "part", "material", "color")


def test_conversion_is_strict(colour):
    enc, dec, data, params = colour
    model = DilatedPPMNet(len(data.labels))
    esd, dsd = state_dict_numpy(enc), state_dict_numpy(dec)
    bad = dict(dsd)
    del bad["conv_last.4.bias"]
    bad["conv_last.9.weight"] = bad["conv_last.4.weight"]
    with pytest.raises(CheckpointMismatch) as e:
        colour_params(model, esd, bad)
    assert "- decoder:conv_last.4.bias" in str(e.value)
    assert "+ decoder:conv_last.9.weight" in str(e.value)
    bad = dict(esd)
    bad["layer2.0.bn1.running_var"] = bad["layer2.0.bn1.running_var"][:3]
    with pytest.raises(CheckpointMismatch, match="layer2.0.bn1.running_var"):
        colour_params(model, bad, dsd)


@pytest.mark.slow
def test_colour_net_capture_and_edits(colour):
    _, dec, data, params = colour
    from jaxdissect.edits import Edit

    model = DilatedPPMNet(len(data.labels))
    x = np.random.RandomState(8).randn(1, 32, 32, 3).astype(np.float32)
    unit = (1, 1, 1, 512)  # per unit, in full rank (the tests forbid rank promotion)
    zero = Edit(alpha=np.ones(unit, np.float32), value=np.zeros(unit, np.float32))
    out, acts = run(model.apply, {"params": params}, x, capture=("ppm_last", "layer3"),
                    edits={"ppm_last": zero}, aliases=model.layer_paths)
    assert acts["layer3"].shape == (1, 4, 4, 256)
    assert np.all(np.asarray(acts["ppm_last"]) == 0)  # captured after the edit
    bias = dec.state_dict()["conv_last.4.bias"].numpy()
    np.testing.assert_allclose(np.asarray(out), np.broadcast_to(bias, out.shape), rtol=1e-6)
    with pytest.raises(KeyError, match="conv5_3"):
        run(model.apply, {"params": params}, x, capture=("conv5_3",), aliases=model.layer_paths)
    with pytest.raises(KeyError, match="layer9"):
        run(model.apply, {"params": params}, x, edits={"layer9": zero}, aliases=model.layer_paths)
