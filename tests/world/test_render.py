"""The world renderer: determinism, label format, vocabulary, coverage, balance."""

import numpy as np
import pytest

from jaxdissect.data.source import ImageSource, iterate
from jaxdissect.world import CLASS_NAMES, COLORS, LABELS, LAYERS, WorldSource, render
from jaxdissect.world.vocab import color_layer, label_id, layer_ids, name_colors


@pytest.fixture(scope="module")
def sample():
    """1,000 images of a world seed not used for training."""
    return WorldSource(1000, seed=4242).render_u8(0, 1000)


def test_same_seed_same_bytes_any_split():
    a = WorldSource(40, seed=7).batch(0, 40)
    b = WorldSource(40, seed=7, threads=1)
    parts = [batch for _, batch in iterate(b, 13)]
    for key in ("image", "label", "seg"):
        joined = np.concatenate([p[key] for p in parts])
        assert joined.tobytes() == a[key].tobytes(), key
    again = render(7, np.arange(40))
    assert again["image"].tobytes() == (a["image"] * 255).round().astype(np.uint8).tobytes()
    other = WorldSource(40, seed=8).batch(0, 40)
    assert not np.array_equal(other["image"], a["image"])


def test_batch_format():
    src = WorldSource(20, seed=1)
    assert isinstance(src, ImageSource)
    b = src.batch(3, 11)
    assert b["image"].shape == (8, 64, 64, 3) and b["image"].dtype == np.float32
    assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0
    assert b["label"].shape == (8,) and b["label"].dtype == np.int32
    assert b["seg"].shape == (8, 4, 64, 64) and b["seg"].dtype == np.int32
    for k, layer in enumerate(LAYERS):
        allowed = set(layer_ids(layer).tolist()) | {0}
        assert set(np.unique(b["seg"][:, k]).tolist()) <= allowed, layer
    # every pixel has an object and a colour
    assert (b["seg"][:, 0] > 0).all() and (b["seg"][:, 3] > 0).all()
    big = WorldSource(2, seed=1, size=128).batch(0, 2)
    assert big["image"].shape == (2, 128, 128, 3) and big["seg"].shape == (2, 4, 128, 128)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="seed"):
        WorldSource(10, seed=-1)
    with pytest.raises(ValueError, match="size"):
        WorldSource(10, size=50)
    with pytest.raises(IndexError):
        WorldSource(10).batch(5, 11)


def test_vocabulary_and_categories():
    assert LABELS.names[0] == "-"
    assert LABELS.category_names == ("object", "part", "material", "color")
    counts = {c: LABELS.categories.count(c) for c in LABELS.category_names}
    assert counts["object"] >= 12 and counts["part"] >= 4 and counts["material"] >= 4
    assert sorted(COLORS) == sorted(["red", "orange", "yellow", "green", "blue", "purple",
                                     "pink", "brown", "black", "white", "grey"])
    assert len(set(LABELS.names)) == len(LABELS.names)
    assert len(CLASS_NAMES) >= 10
    for name in ("door", "window", "house", "sky", "tree"):
        assert LABELS.categories[label_id(name)] == "object"
    for name in ("roof", "trunk", "wheel", "pane"):
        assert LABELS.categories[label_id(name)] == "part"
    for name in ("wood", "brick", "glass", "foliage"):
        assert LABELS.categories[label_id(name)] == "material"


def test_tree_crowns_have_one_name_per_layer(sample):
    """A crown is tree (object) and foliage (material), and foliage is also grass's
    material, so no part or material marks the tree's pixels less its trunk (which
    would win the tree's label from units that fire on crowns: a subset's IoU is higher)."""
    seg = sample["seg"]
    crown = (seg[:, 0] == label_id("tree")) & (seg[:, 1] != label_id("trunk"))
    assert "crown" not in LABELS.names
    assert (seg[:, 1][crown] == 0).all()
    assert (seg[:, 2][crown] == label_id("foliage")).all()
    assert (seg[:, 2][seg[:, 0] == label_id("grass")] == label_id("foliage")).all()
    iou = lambda a, b: (a & b).sum() / (a | b).sum()
    for k, layer in ((1, "part"), (2, "material")):
        for i in layer_ids(layer):
            assert iou(seg[:, k] == i, crown) < 0.5, LABELS.names[i]


def test_every_concept_occurs(sample):
    seg = sample["seg"]
    for k, layer in enumerate(LAYERS):
        seen = set(np.unique(seg[:, k]).tolist())
        missing = [LABELS.names[i] for i in layer_ids(layer) if i not in seen]
        assert not missing, f"{layer} never drawn: {missing}"


def test_classes_balanced(sample):
    counts = np.bincount(sample["label"], minlength=len(CLASS_NAMES))
    assert counts.min() >= 1000 // len(CLASS_NAMES) and counts.max() <= 1000 // len(
        CLASS_NAMES) + 1
    # exactly balanced in every block of len(CLASS_NAMES) indices
    n = len(CLASS_NAMES) * 3
    labels = render(5, np.arange(n))["label"].reshape(3, -1)
    assert all(sorted(row.tolist()) == list(range(len(CLASS_NAMES))) for row in labels)


def test_class_indices_pick_one_class_in_order():
    from jaxdissect.world.source import class_indices
    n = len(CLASS_NAMES) * 40
    all_labels = render(3, np.arange(n), 32)["label"]
    want = np.flatnonzero(all_labels == CLASS_NAMES.index("village"))
    np.testing.assert_array_equal(class_indices(3, ["village"], 40), want)
    two = class_indices(3, ["village", "street"], 15)
    assert len(two) == 15 and (np.diff(two) > 0).all()
    assert set(all_labels[two]) <= {CLASS_NAMES.index("village"), CLASS_NAMES.index("street")}
    with pytest.raises(ValueError, match="unknown scene classes.*'castle'"):
        class_indices(3, ["castle"], 5)


def test_concepts_vary_in_colour_and_position(sample):
    """No concept is one colour or in one place: for each object seen in >= 20
    images, its mean colour and centroid vary across images."""
    img = sample["image"].astype(np.float64)
    obj = sample["seg"][:, 0]
    ys = np.arange(64)[None, :, None]
    for i in layer_ids("object"):
        m = obj == i
        have = m.any(axis=(1, 2))
        if have.sum() < 20:
            continue
        area = m[have].sum(axis=(1, 2))
        mean_rgb = (img[have] * m[have][..., None]).sum(axis=(1, 2)) / area[:, None]
        cy = (m[have] * ys).sum(axis=(1, 2)) / area
        name = LABELS.names[i]
        assert mean_rgb.std(axis=0).max() > 8.0, name
        assert cy.std() > 1.5, name


def test_colour_names_oracle():
    named = {(1, 0, 0): "red", (0, 0.8, 0): "green", (0, 0, 1): "blue", (1, 1, 0): "yellow",
             (1, 0.55, 0): "orange", (0.55, 0.1, 0.75): "purple", (1, 0.6, 0.75): "pink",
             (0.45, 0.3, 0.12): "brown", (0, 0, 0): "black", (1, 1, 1): "white",
             (0.5, 0.5, 0.5): "grey"}
    got = name_colors(np.array(list(named)))
    assert [COLORS[g] for g in got] == list(named.values())
    # the colour layer is the rule applied to the rendered pixel
    rgb = np.array([[[255, 0, 0], [128, 128, 128]]], np.uint8)
    assert [LABELS.names[v] for v in color_layer(rgb).ravel()] == ["red", "grey"]


def test_colour_layer_matches_pixels(sample):
    seg3 = sample["seg"][:50, 3]
    q = (sample["image"][:50] >> 3).astype(np.float64) * 8 + 4
    want = name_colors(q / 255.0) + layer_ids("color")[0]
    assert np.array_equal(seg3, want)


def test_doors_and_windows_sit_on_buildings(sample):
    """Above every door or window column segment is its building (house, or the
    room's wall), never sky; doors reach the bottom of their building."""
    obj = sample["seg"][:, 0]
    door, window = label_id("door"), label_id("window")
    hosts = {label_id("house"), label_id("wall"), door, window}
    for target in (door, window):
        m = obj == target
        top = m & ~np.concatenate([np.zeros_like(m[:, :1]), m[:, :-1]], axis=1)
        b, y, x = np.nonzero(top[:, 1:])
        above = obj[b, y, x]  # pixel just above the segment's top (rows shifted by 1)
        share = np.isin(above, list(hosts)).mean()
        assert share > 0.97, (LABELS.names[target], share)
    # below a door's lowest pixel is ground or floor, not more house
    m = obj == door
    bottom = m & ~np.concatenate([m[:, 1:], np.zeros_like(m[:, :1])], axis=1)
    b, y, x = np.nonzero(bottom[:, :-1])
    below = obj[b, y + 1, x]
    assert np.isin(below, [label_id("house"), label_id("window")]).mean() < 0.05


def test_no_class_decided_by_mean_colour(sample):
    """A linear classifier on an image's mean RGB (fit on 700, tested on 300) is far
    from deciding the class, while every class is still well defined by its objects."""
    x = sample["image"].astype(np.float64).mean(axis=(1, 2)) / 255.0
    f = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    y = sample["label"]
    w = np.linalg.lstsq(f[:700], np.eye(len(CLASS_NAMES))[y[:700]], rcond=None)[0]
    acc = (np.argmax(f[700:] @ w, axis=1) == y[700:]).mean()
    assert 1.5 / len(CLASS_NAMES) < acc < 0.6
