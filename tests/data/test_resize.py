"""Every image source reaches a classifier at its spec's input size and resize policy
(``data.resize``), against torch's bilinear resize (antialiased, as PIL's); the
segmentation keeps its grid and shows the part of the image the model sees; the
shipped world models read the world as before."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxdissect import cli
from jaxdissect.data.resize import Resized, at_input_size, world_render_size
from jaxdissect.data.source import Prefix
from jaxdissect.pipeline.resolve import load_data
from jaxdissect.world import WorldSource


class Source:
    """``image`` and ``seg`` given as arrays."""

    seg_labels = class_names = None

    def __init__(self, image, seg=None):
        self.image, self.seg, self.num_examples = image, seg, len(image)

    def identity(self):
        return {"test": self.image.shape}

    def batch(self, start, stop):
        b = {"image": self.image[start:stop]}
        if self.seg is not None:
            b["seg"] = self.seg[start:stop]
        return b


def torch_resize(images, size):
    t = torch.from_numpy(images).permute(0, 3, 1, 2)
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False,
                         antialias=True).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("have,want", [(128, 224), (128, 48), (32, 40)])
def test_stretch_and_resize_crop_equal_torch(have, want):
    images = np.random.default_rng(0).random((2, have, have, 3), dtype=np.float32)
    src = Source(images)
    got = Resized(src, (want, want), "stretch").batch(0, 2)["image"]
    np.testing.assert_allclose(got, torch_resize(images, (want, want)), atol=2e-5)
    big = round(want * 256 / 224)
    o = (big - want) // 2
    got = Resized(src, (want, want), "resize-crop").batch(0, 2)["image"]
    np.testing.assert_allclose(got, torch_resize(images, (big, big))[:, o:o + want,
                                                                     o:o + want], atol=2e-5)


def test_segmentation_shows_the_pixels_the_model_sees():
    """Image rows and columns carry their position; the cropped ``seg`` at each of its
    pixels names the source pixel under the image pixel there."""
    n = 128
    pos = (np.arange(n) + 0.5) / n
    image = np.zeros((1, n, n, 3), np.float32)
    image[0, :, :, 0] = pos[:, None]
    image[0, :, :, 1] = pos[None, :]
    seg = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))[None]
    for policy in ("stretch", "resize-crop"):
        b = Resized(Source(image, seg.astype(np.int32)), (224, 224), policy).batch(0, 1)
        assert b["seg"].shape == (1, 2, n, n)      # the grid stays
        rows = ((np.arange(n) + 0.5) * 224 / n).astype(int)
        under = b["image"][0][rows[:, None], rows[None, :]]        # [n, n, 3]
        for axis in (0, 1):
            cell = (b["seg"][0, axis] + 0.5) / n
            inner = slice(2, -2)                   # bilinear clamps at the border
            assert np.abs(cell - under[..., axis])[inner, inner].max() <= 1 / n + 1e-6


def test_world_reaches_a_224_model_at_224(tmp_path):
    from tests.support import flax_models as fm
    spec = fm.tuple_classifier().replace(input_size=(224, 224), resize="resize-crop")
    src = load_data("world", spec, 3, 4)
    b = src.batch(0, 3)
    assert b["image"].shape == (3, 224, 224, 3) and b["seg"].shape == (3, 4, 128, 128)
    assert src.identity()["resized"] == [224, 224]
    world = WorldSource(3, seed=4, size=128).batch(0, 3)
    np.testing.assert_allclose(b["image"], Resized(Source(world["image"]), (224, 224),
                                                   "resize-crop").batch(0, 3)["image"])
    assert world_render_size((48, 48)) == 64 and world_render_size((300, 300)) == 128
    assert load_data("world", spec.replace(input_size=(48, 48)), 2, 4).batch(0, 2)[
        "image"].shape == (2, 48, 48, 3)


def test_shipped_world_classifier_reads_the_world_unchanged():
    from jaxdissect.world import classifier
    spec = classifier.spec()
    src = load_data("world", spec, 5, 4)
    assert isinstance(src, WorldSource) and src.size == spec.input_size[0]
    same = WorldSource(7, seed=2, size=spec.input_size[0])
    assert at_input_size(same, spec) is same
    assert at_input_size(Prefix(same, 3), spec).inner is same    # declared, not read
    other = Source(np.zeros((2, 32, 32, 3), np.float32))          # read from an image
    assert isinstance(at_input_size(other, spec), Resized)


@pytest.mark.slow
def test_torchvision_vit_file_dissects_the_world(tmp_path):
    """A torchvision-layout ViT at 224 (small, random) through ``dissect --data
    world``: the world renders at 128 and is resized to 224 on its way in."""
    from tests.support.torch_classifiers import torch_vit
    tm = torch_vit(seed=0, depth=1, mlp_dim=64, num_classes=11)   # ViT-B width
    path = tmp_path / "vit_tiny.pth"
    torch.save(tm.state_dict(), path)
    out = tmp_path / "d"
    assert cli.main(["dissect", "--model", str(path), "--data", "world", "--num-images", "4",
                     "--layer", "head", "--batch-size", "4", "--out", str(out),
                     "--no-progress"]) == 0
    assert np.load(out / "iou.npy").shape[0] == 11


@pytest.mark.parametrize("make", ["resnet50", "alexnet_tv"])
def test_resnet50_and_alexnet_specs_read_the_world_at_224(make):
    """The converted specs of a ResNet-50 and a torchvision AlexNet take 224x224
    images (resize-crop); the world reaches them at that size, not at its 128."""
    from jaxdissect.models import alexnet, tv_resnet
    if make == "resnet50":
        spec = tv_resnet.spec(tv_resnet.ResNet("bottleneck", (3, 4, 6, 3)), {})
    else:
        spec = alexnet.spec(alexnet.AlexNet(image_size=224, conv1_padding=2), {})
    assert spec.input_size == (224, 224) and spec.resize == "resize-crop"
    b = load_data("world", spec, 2, 4).batch(0, 2)
    assert b["image"].shape == (2, 224, 224, 3)
