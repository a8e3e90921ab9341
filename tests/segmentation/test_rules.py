"""The reference's multi-label rules against independent NumPy statements of them."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.segmentation import SemanticLabelData, UnifiedLabelData
from jaxdissect.segmentation.rules import (
    quad_split,
    semantic_labels,
    semantic_plan,
    unified_labels,
    unified_plan,
)
from tests.support.segmenter_oracles import (
    quad_numpy,
    semantic_numbering,
    semantic_rules_numpy,
    upp_numbering,
    upp_rules_numpy,
)

LABELS = {
    "object": ["-", "wall", "building", "sky", "floor", "tree", "door", "person", "window",
               "car", "road"],
    "material": ["-", "brick", "glass", "wood"],
    "scene": ["street"],
    "part": [],
    # deliberately not in object-index order: the part head is grouped by object index
    "object_part": {"person": ["head", "arm", "leg"], "building": ["door", "window", "roof"],
                    "sky": ["cloud", "sun"], "car": ["wheel", "door", "window", "light"]},
}


def split_parts(labels, part_scores, owners):
    """Per-owner slices of the part head (grouped by increasing object index)."""
    objs = labels["object"]
    start, where = 0, {}
    for o in sorted(labels["object_part"], key=objs.index):
        n = len(labels["object_part"][o])
        where[o] = (start, start + n)
        start += n
    return [part_scores[:, where[o][0]:where[o][1]] for o in owners]


def random_scores(labels, b=2, h=12, w=14, seed=0):
    rs = np.random.RandomState(seed)
    n_part = sum(len(p) for p in labels["object_part"].values())
    # few object classes -> large regions, so many pixels belong to owners of parts
    obj = rs.rand(b, len(labels["object"]), h, w).astype(np.float32)
    obj[:, [2, 3, 7, 9]] += 0.5
    return obj, rs.rand(b, len(labels["material"]), h, w).astype(np.float32), \
        rs.rand(b, n_part, h, w).astype(np.float32)


def nhwc(a):
    return jnp.asarray(a.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("all_parts,quad", [(True, False), (False, False), (True, True)])
def test_unified_rules_match_numpy(all_parts, quad):
    data = UnifiedLabelData.from_json(LABELS)
    plan = unified_plan(data, all_parts=all_parts, quad=quad)
    names, cats = zip(*upp_numbering(LABELS, all_parts, quad)[0])
    assert plan.labels.names == names and plan.labels.categories[1:] == cats[1:]
    obj, mat, part = random_scores(LABELS)
    ours = np.asarray(unified_labels(plan, nhwc(obj), nhwc(mat), nhwc(part)))
    owners = list(LABELS["object_part"]) if all_parts else ["sky", "building", "person"]
    ref = upp_rules_numpy(LABELS, obj, mat, split_parts(LABELS, part, owners), all_parts, quad)
    np.testing.assert_array_equal(ours[:, :3], ref)
    assert ours.shape[1] == (5 if quad else 3)
    assert (ref[:, 2] > 0).mean() > 0.2  # the part rule was exercised
    if quad:
        np.testing.assert_array_equal(ours[:, 3:], quad_numpy(ref[:, 0], 10))


def test_parts_outside_their_object_are_dropped():
    data = UnifiedLabelData.from_json(LABELS)
    plan = unified_plan(data)
    obj, mat, part = random_scores(LABELS, b=1, h=6, w=8, seed=1)
    obj[:] = 0
    obj[:, 2, :, :4] = 1.0  # building on the left
    obj[:, 1, :, 4:] = 1.0  # wall (no parts) on the right
    part[:] = np.random.RandomState(2).rand(*part.shape) + 1.0  # confident parts everywhere
    seg = np.asarray(unified_labels(plan, nhwc(obj), nhwc(mat), nhwc(part)))
    assert np.all(seg[0, 2, :, 4:] == 0)
    building_parts = {data.object.index("door"), data.object.index("window"),
                      dict(zip(plan.labels.names, range(len(plan.labels))))["roof"]}
    assert set(np.unique(seg[0, 2, :, :4])) <= building_parts
    assert seg[0, 2, :, :4].min() > 0


@pytest.mark.parametrize("drop_last", [True, False])
def test_quad_split_matches_scipy_regions(drop_last):
    rs = np.random.RandomState(3)
    coarse = rs.randint(0, 5, size=(2, 6, 7))
    obj = np.repeat(np.repeat(coarse, 3, axis=1), 3, axis=2)  # blocky regions
    obj[:, rs.rand(18, 21) < 0.05] = 4  # and some specks
    obj[1, 2:9, 2:20] = 3  # an elongated region touching others diagonally
    ours = np.asarray(quad_split(jnp.asarray(obj), 12, drop_last_region=drop_last))
    np.testing.assert_array_equal(ours, quad_numpy(obj, 12, drop_last_region=drop_last))


def test_quad_split_snake_region():
    """A region whose labels need many propagation steps (a one-pixel-wide spiral)."""
    h = w = 21
    obj = np.zeros((1, h, w), np.int64)
    obj[0, ::4, 1:-1] = 2
    for r in range(0, h - 4, 4):
        obj[0, r:r + 5, w - 2 if (r // 4) % 2 == 0 else 1] = 2
    ours = np.asarray(quad_split(jnp.asarray(obj), 5, drop_last_region=False))
    np.testing.assert_array_equal(ours, quad_numpy(obj, 5, drop_last_region=False))


SEMANTIC = {
    "labels": [{"name": "-", "category": "stuff"}, {"name": "floor", "category": "stuff"},
               {"name": "thing", "category": "stuff"}, {"name": "hidden", "category": "stuff",
                                                         "internal": True},
               {"name": "red", "category": "color"}, {"name": "blue", "category": "color"},
               {"name": "floor", "category": "color"}],
    "categories": [{"name": "stuff"}, {"name": "color", "mask": "thing"}],
    "imageformat": {"byteorder": "RGB", "mean": [0.5, 0.5, 0.5], "stdev": [0.2, 0.2, 0.2]},
}


def test_semantic_rules_match_numpy():
    data = SemanticLabelData.from_json(SEMANTIC)
    plan = semantic_plan(data)
    names, _ = zip(*semantic_numbering(SEMANTIC)[0])
    assert plan.labels.names == names  # "-", floor, thing, red, blue (floor shared)
    scores = np.random.RandomState(4).rand(2, 7, 9, 11).astype(np.float32)
    ours = np.asarray(semantic_labels(plan, nhwc(scores)))
    ref = semantic_rules_numpy(SEMANTIC, scores)
    np.testing.assert_array_equal(ours, ref)
    assert (ours[:, 1] == 0).any() and (ours[:, 1] > 0).any()  # the mask acted


def test_labels_files_round_trip_and_errors(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(LABELS))
    data = UnifiedLabelData.read(str(path))
    assert [o for o, _, _ in data.part_blocks] == ["building", "sky", "person", "car"]
    assert data.num_part_channels == 12
    bad = dict(LABELS, object_part={"spaceship": ["wing"]})
    with pytest.raises(ValueError, match="spaceship"):
        UnifiedLabelData.from_json(bad)
    with pytest.raises(ValueError, match="no keys"):
        UnifiedLabelData.from_json({"object": ["-"]})
    with pytest.raises(ValueError, match="categories"):
        SemanticLabelData.from_json(dict(SEMANTIC, categories=[{"name": "stuff"}]))
    with pytest.raises(FileNotFoundError, match="labels file not found"):
        UnifiedLabelData.read(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="no parts"):
        unified_plan(UnifiedLabelData.from_json(dict(LABELS, object_part={})), all_parts=False)
