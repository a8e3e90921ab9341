"""Pictures of generator edits: outlines, tiles and grids against NumPy loops; the
removal and insertion pictures' images and changed pixels against the tiny ProGAN
in PyTorch with the edit written out there, and the paint grid's box outlines."""

from __future__ import annotations

import dataclasses
import os
import types

import numpy as np
import pytest
import torch

from jaxdissect.report import pictures as P

NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def outline_oracle(image, mask, color, width):
    """Loops: the mask brought to the image's size by nearest neighbour, then
    ``width`` rings peeled from its inside, each ring the pixels with a 4-neighbour
    outside what is left (the border counting as outside)."""
    big_h, big_w = image.shape[:2]
    h, w = mask.shape
    m = np.zeros((big_h, big_w), bool)
    for i in range(big_h):
        for j in range(big_w):
            m[i, j] = mask[int(i * h / big_h), int(j * w / big_w)]
    out = image.copy()
    for _ in range(width):
        ring = np.zeros_like(m)
        for i in range(big_h):
            for j in range(big_w):
                if m[i, j]:
                    ring[i, j] = not all(0 <= i + a < big_h and 0 <= j + b < big_w
                                         and m[i + a, j + b] for a, b in NEIGHBOURS)
        out[ring] = color
        m &= ~ring
    return out


@pytest.mark.parametrize("mask_hw,image_hw,width", [((5, 7), (20, 28), 1),
                                                    ((5, 7), (20, 28), 2),
                                                    ((6, 6), (16, 16), 2),   # not a multiple
                                                    ((16, 16), (16, 16), 3)])
def test_outline_matches_loops(mask_hw, image_hw, width):
    rng = np.random.default_rng(sum(mask_hw) + width)
    image = rng.integers(0, 256, image_hw + (3,), dtype=np.uint8)
    mask = rng.random(mask_hw) > 0.5
    got = P.outline(image, mask, (1, 2, 3), width)
    np.testing.assert_array_equal(got, outline_oracle(image, mask, (1, 2, 3), width))
    assert got is not image and not np.shares_memory(got, image)


def test_outline_of_a_box_is_its_border():
    image = np.zeros((12, 12, 3), np.uint8)
    box = P.box_mask((12, 12), P.cell_box(1, 2, (4, 4)))      # rows 3..5, cols 6..8
    got = P.outline(image, box, (255, 0, 0), width=1)
    drawn = got[..., 0] == 255
    want = np.zeros((12, 12), bool)
    want[3:6, 6:9] = True
    want[4, 7] = False                                           # the inside stays
    np.testing.assert_array_equal(drawn, want)


def test_tile_and_compose():
    rng = np.random.default_rng(0)
    img = rng.random((4, 3, 3)).astype(np.float32) * 1.4 - 0.2   # unclipped, as generated
    t = P.tile(img, 5)
    assert t.shape == (20, 15, 3) and t.dtype == np.uint8
    want = np.kron(P.to_u8(img), np.ones((5, 5, 1), np.uint8))
    np.testing.assert_array_equal(t, want)
    assert P.scale_for(16) == 8 and P.scale_for(32) == 4 and P.scale_for(100) == 2
    assert P.scale_for(256) == 1
    a, b, c = (np.full((2, 3, 3), v, np.uint8) for v in (10, 20, 30))
    grid = P.compose([[a, b], [c]], gap=1)
    assert grid.shape == (5, 7, 3)
    np.testing.assert_array_equal(grid[:2, :3], a)
    np.testing.assert_array_equal(grid[:2, 4:], b)
    np.testing.assert_array_equal(grid[3:, :3], c)
    assert (grid[2] == 255).all() and (grid[:, 3] == 255).all() and (grid[3:, 4:] == 255).all()
    with pytest.raises(ValueError, match="tile"):
        P.compose([[a, np.zeros((3, 3, 3), np.uint8)]])


def test_spread_locations():
    from jaxdissect.experiments.intervene_pictures import spread_locations
    assert spread_locations((8, 8), 4).tolist() == [[2, 2], [2, 6], [6, 2], [6, 6]]
    assert spread_locations((8, 8), 1).tolist() == [[4, 4]]
    cells = spread_locations((5, 7), 6)
    assert len({tuple(c) for c in cells}) == 6
    assert (cells[:, 0] < 5).all() and (cells[:, 1] < 7).all()


class GreenAbove:
    """Label 1 ("high") where the green channel exceeds ``t``: the tiny ProGAN's
    edits move its near-flat images by ~1e-3, which flips pixels near ``t``."""

    from jaxdissect.labels import LabelSet
    labels = LabelSet.from_pairs([("high", "object")])
    num_layers = 1

    def __init__(self, t: float):
        self.t = t

    def __call__(self, images):
        import jax.numpy as jnp
        return (jnp.asarray(images)[..., 1] > self.t)[:, None].astype(jnp.int32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from jaxdissect import pipeline as C
    from jaxdissect.data.source import ZSource
    from jaxdissect.experiments.intervene import split_generator
    from tests.support.tiny_checkpoints import tiny_gan_pth
    path = str(tmp_path_factory.mktemp("g") / "g.pth")
    model = tiny_gan_pth(path)
    loaded = C.load_model(path)
    return model, split_generator(loaded, "layer4"), ZSource(10, 8, 1)


def forward(model, z, t, edit=None):
    """The torch images (unclipped), the oracle's label-1 mask, and ``sure``: the
    pixels far enough from ``t`` that float rounding cannot flip them."""
    from tests.support.tiny_checkpoints import gan_forward
    images = gan_forward(model, z, edit, clip=False).numpy()
    return images, images[..., 1] > t, np.abs(images[..., 1] - t) > 1e-4


def test_removal_pictures_match_torch(tiny):
    from jaxdissect.experiments.intervene_pictures import removal_pictures
    model, split, source = tiny
    z = source.batch(0, 6)["z"]

    def zero(h):
        h = h.clone()
        h[:, [5, 2, 7]] = 0
        return h
    # the threshold halfway down the pixel the edit lowers most: it flips
    base = forward(model, z, 0)[0][..., 1]
    drop = base - forward(model, z, 0, zero)[0][..., 1]
    p = np.unravel_index(np.argmax(drop), drop.shape)
    t = float(base[p] - drop[p] / 2)
    curve = types.SimpleNamespace(concept="high", units=np.array([5, 2, 7]),
                                  n_units=np.arange(4))
    pics = removal_pictures(split, GreenAbove(t), source, curve, 1, 2, count=3, pool=6)
    _, has, _ = forward(model, z, t)
    want_samples = np.sort(np.argsort(-has.mean((1, 2)), kind="stable")[:3])
    np.testing.assert_array_equal(pics.samples, want_samples)
    assert pics.units.tolist() == [5, 2, 7]                 # the curve's largest set
    assert "largest set" in pics.edit and "3 of the first 6" in pics.which
    zs = z[want_samples]
    base, has0, sure0 = forward(model, zs, t)
    edited, has1, sure1 = forward(model, zs, t, zero)
    np.testing.assert_allclose(pics.base, base, atol=2e-5)
    np.testing.assert_allclose(pics.edited[:, 0], edited, atol=2e-5)
    sure = sure0 & sure1
    np.testing.assert_array_equal(pics.changed[:, 0][sure], (has0 & ~has1)[sure])
    assert (has0 & ~has1)[sure].sum() > 0                      # some pixels lost the label


def test_insertion_pictures_match_torch(tiny):
    from jaxdissect.experiments.intervene_pictures import insertion_pictures
    model, split, source = tiny
    high = np.linspace(10.0, 40.0, 8).astype(np.float32)
    units = [2, 6]
    z = source.batch(0, 2)["z"]

    def put_at(y, x):
        def put(h):
            h = h.clone()
            h[:, units, y, x] = torch.tensor(high[units])
            return h
        return put
    # the threshold halfway up the pixel the first edit raises most: it flips
    base = forward(model, z, 0)[0][..., 1]
    rise = forward(model, z, 0, put_at(2, 2))[0][..., 1] - base
    p = np.unravel_index(np.argmax(rise), rise.shape)
    t = float(base[p] + rise[p] / 2)
    summary = types.SimpleNamespace(concept="high", units=np.array(units))
    pics = insertion_pictures(split, GreenAbove(t), source, summary, high, 1, 2, count=2,
                              locations=4)
    assert pics.grid == (8, 8) and pics.locations.tolist() == [[2, 2], [2, 6], [6, 2], [6, 6]]
    base, has0, sure0 = forward(model, z, t)
    np.testing.assert_allclose(pics.base, base, atol=2e-5)
    gained = 0
    for e, (y, x) in enumerate(pics.locations):
        edited, has1, sure1 = forward(model, z, t, put_at(y, x))
        np.testing.assert_allclose(pics.edited[:, e], edited, atol=2e-5)
        sure = sure0 & sure1
        np.testing.assert_array_equal(pics.changed[:, e][sure], (has1 & ~has0)[sure])
        gained += (has1 & ~has0)[sure].sum()
    assert gained > 0 and pics.changed[:, 0][p[0]][p[1:]]      # the planted pixel flips


def test_figures_write_pngs_of_their_stated_size(tmp_path):
    from PIL import Image

    from jaxdissect.experiments.intervene_pictures import EditPictures
    rng = np.random.default_rng(0)
    base = rng.random((2, 16, 16, 3)).astype(np.float32)
    edited = rng.random((2, 3, 16, 16, 3)).astype(np.float32)
    changed = rng.random((2, 3, 16, 16)) > 0.7
    pics = EditPictures("insertion", "blue", np.array([3, 0]), np.arange(2), base, edited,
                        changed, np.array([[1, 1], [1, 6], [6, 1]]), (8, 8), "an edit", "which")
    rec = ins = P.insertion_grid(str(tmp_path), pics)
    png = np.asarray(Image.open(tmp_path / rec["src"]))
    assert png.shape == (rec["height"], rec["width"], 3) == (2 * 128 + 4, 4 * 128 + 12, 3)
    assert rec["changed_pixels"] == changed.sum((2, 3)).tolist()
    # sample 1, edit 2: its tile, the change then the cell outlined on the upscaled image
    t = P.tile(edited[1, 2], 8)
    t = P.outline(t, changed[1, 2])
    t = P.outline(t, P.box_mask((128, 128), P.cell_box(6, 1, (8, 8))), P.PLACE)
    np.testing.assert_array_equal(png[132:260, 3 * 132:3 * 132 + 128], t)
    np.testing.assert_array_equal(png[:128, :128], P.tile(base[0], 8))   # unedited, bare
    removal = EditPictures("removal", "green", np.arange(4), np.arange(2), base,
                           edited[:, :1], changed[:, :1], np.zeros((1, 2), int), (0, 0), "e", "w")
    rec = P.removal_strip(str(tmp_path), removal)
    png = np.asarray(Image.open(tmp_path / rec["src"]))
    assert png.shape == (2 * 128 + 4, 2 * 128 + 4, 3)
    np.testing.assert_array_equal(png[:128, 132:], P.outline(P.tile(base[1], 8),
                                                             changed[1, 0]))
    np.testing.assert_array_equal(png[132:, 132:], P.tile(edited[1, 0], 8))
    assert "Removing green" in P.caption(rec) and "Inserting blue" in P.caption(ins)
    # the captions' shares: changed pixels over the segmentation's, mean over the edits
    assert f"({changed[:, :1].mean():.1%} of the image" in P.caption(rec)
    assert f"({changed.mean():.2%} of the image on average over these 6 edits" in P.caption(ins)
    P.save_records(str(tmp_path), [rec, ins])
    assert P.load_records(str(tmp_path)) == [rec, ins]
    # a later run's records keep only their own files
    (tmp_path / "pictures" / "removal_old.png").write_bytes(b"x")
    P.remove_others(str(tmp_path), [rec])
    assert sorted(os.listdir(tmp_path / "pictures")) == ["removal_green.png"]
    odd = dataclasses.replace(removal, concept="pool table/x")
    assert P.removal_strip(str(tmp_path), odd)["src"] == "pictures/removal_pool_table_x.png"


def test_paint_grid_outlines_each_box(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(1)
    base = rng.random((2, 32, 32, 3)).astype(np.float32)
    painted = rng.random((2, 2, 32, 32, 3)).astype(np.float32)
    boxes = [(0, 0, 1, 0.5), (0.25, 0.5, 0.75, 1)]
    rec = P.paint_grid(str(tmp_path), base, painted, boxes)
    png = np.asarray(Image.open(tmp_path / "painted.png"))
    assert (rec["width"], rec["height"]) == (3 * 128 + 8, 2 * 128 + 4)
    tile = png[132:260, 2 * 132:2 * 132 + 128]                 # latent 1, edit 1
    want = P.tile(painted[1, 1], 4)
    border = np.zeros((128, 128), bool)
    border[32:96, 64:128] = True
    border[34:94, 66:126] = False                              # two pixels thick
    want[border] = P.CHANGE
    np.testing.assert_array_equal(tile, want)
