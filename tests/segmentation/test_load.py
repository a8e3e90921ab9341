"""``load_segmenter`` reads the weights cache as ``jaxdissect weights fetch`` fills it."""

import json

import jax
import numpy as np
import pytest
import torch

from jaxdissect.segmentation import MergedSegmenter, UnifiedParsingSegmenter
from jaxdissect.segmentation.base import Segmenter
from jaxdissect.segmentation.load import load_segmenter
from tests.segmentation.test_segmenters import COLOUR_LABELS, UPP_LABELS, nr_classes
from tests.support.torch_segmodels import colour_modules, state_dict_numpy, upp_modules


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    mods = {}
    for sub, epoch, labels, (enc, dec) in (
            ("upp-resnet50-upernet", 40, UPP_LABELS, upp_modules(nr_classes(UPP_LABELS), 11)),
            ("color-resnet18dilated-ppm_deepsup", 20, COLOUR_LABELS,
             colour_modules(len(COLOUR_LABELS["labels"]), 12))):
        d = root / "downloads" / "segmodel" / sub
        d.mkdir(parents=True)
        torch.save(enc.state_dict(), d / f"encoder_epoch_{epoch}.pth")
        torch.save(dec.state_dict(), d / f"decoder_epoch_{epoch}.pth")
        (d / "labels.json").write_text(json.dumps(labels))
        mods[sub] = (state_dict_numpy(enc), state_dict_numpy(dec))
    return root, mods


@pytest.mark.slow
def test_netpqc_from_cache(cache):
    root, mods = cache
    seg = load_segmenter("netpqc", cache_dir=root)
    assert isinstance(seg, MergedSegmenter) and isinstance(seg, Segmenter)
    assert seg.num_layers == 6  # object, material, part, 2 quadrant layers, colour
    upp, col = seg.components
    assert upp.downsample == 4 and upp.plan.quad
    # converted values are the files' values (spot checks in Flax layout)
    enc, dec = mods["upp-resnet50-upernet"]
    np.testing.assert_array_equal(upp.params["encoder"]["layer3_5"]["bn2"]["var"],
                                  enc["layer3.5.bn2.running_var"])
    np.testing.assert_array_equal(upp.params["decoder"]["object_head"]["cls"]["kernel"],
                                  dec["object_head.1.weight"].transpose(2, 3, 1, 0))
    cenc, cdec = mods["color-resnet18dilated-ppm_deepsup"]
    np.testing.assert_array_equal(col.params["decoder"]["conv_last_cls"]["bias"],
                                  cdec["conv_last.4.bias"])
    n_leaves = len(jax.tree_util.tree_leaves(upp.params))
    assert n_leaves == sum(1 for k in enc if not k.endswith("num_batches_tracked")) + sum(
        1 for k in dec if not k.endswith("num_batches_tracked") and "scene_head" not in k)


@pytest.mark.slow
def test_net_without_colour_or_parts(cache, monkeypatch):
    root, _ = cache
    monkeypatch.setenv("JAXDISSECT_CACHE", str(root))  # where `weights fetch` puts files
    seg = load_segmenter("net", downsample=1)
    assert isinstance(seg, UnifiedParsingSegmenter) and seg.num_layers == 3
    assert [seg.data.object[g.object_label] for g in seg.plan.part_groups] == [
        "sky", "building", "person"]


def test_missing_weights_say_which_fetch_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="jaxdissect weights fetch segmenter_upp"):
        load_segmenter("netpqc", cache_dir=tmp_path)


def test_bad_names(tmp_path):
    with pytest.raises(ValueError, match="unknown segmenter"):
        load_segmenter("upp", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="texture"):
        load_segmenter("netpqxc", cache_dir=tmp_path)
