"""Broden's layout read into batches, and a Broden-format data set dissected with
both IoU rules (one pass and radix path) against NumPy on all the data at once."""

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.data.broden import (
    BrodenSegmenter,
    BrodenSource,
    broden_from_spec,
    is_broden_spec,
)
from jaxdissect.experiments.dissect import DissectResult, dissect
from jaxdissect.report.netdissect_csv import read_csv, write_csv
from tests.support import netdissect_oracle
from tests.support.broden import CATEGORIES, LABELS, PRIMARY, write_broden


@pytest.fixture(scope="module")
def broden(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("broden"))
    return (root,) + write_broden(root)


def test_source_reads_the_layout(broden):
    root, images, seg, splits = broden
    src = BrodenSource(root)
    assert src.num_examples == 6 and src.num_layers == 9  # the unlabelled row is dropped
    assert src.categories == CATEGORIES
    b = src.batch(0, 6)
    np.testing.assert_array_equal(b["image"], images.astype(np.float32) / 255)
    np.testing.assert_array_equal(b["seg"], seg)
    assert b["seg"].dtype == np.int32 and b["image"].dtype == np.float32
    labels = src.seg_labels
    assert len(labels) == 301 and labels.names[0] == "-" and labels.names[12] == ""
    for num, name, _ in LABELS:
        assert labels.names[num] == name and labels.categories[num] == PRIMARY[num]
    assert labels.category_ids[300] == labels.category_names.index("object")
    assert src.batch(2, 2)["seg"].shape == (0, 9, 8, 8)
    assert src.identity() == BrodenSource(root).identity()
    assert src.identity() != BrodenSource(root, size=12).identity()
    with pytest.raises(IndexError):
        src.batch(3, 7)


def test_split_and_sizes(broden):
    root, images, seg, splits = broden
    train = BrodenSource(root, split="train")
    keep = [i for i, s in enumerate(splits) if s == "train"]
    # layers per category follow the split's images: one texture layer here
    assert train.slots["texture"] == 1 and train.num_layers == 8
    np.testing.assert_array_equal(train.batch(0, len(keep))["seg"], seg[keep][:, :8])
    small = BrodenSource(root, size=12, seg_size=(4, 4))
    b = small.batch(0, 6)
    assert b["image"].shape == (6, 12, 12, 3) and 0 <= b["image"].min() <= b["image"].max() <= 1
    np.testing.assert_array_equal(b["seg"], seg[:, :, 1::2, 1::2])  # nearest, centres
    assert broden_from_spec(f"broden:{root}", split="val").num_examples == 3
    assert is_broden_spec("broden:x") and not is_broden_spec("world")
    with pytest.raises(ValueError, match="broden:DIR"):
        broden_from_spec("broden:")


def test_bad_layouts_are_clear_errors(broden, tmp_path):
    root = broden[0]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BrodenSource(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="category.csv"):
        BrodenSource(str(tmp_path))
    with pytest.raises(ValueError, match="no labelled images in split 'test'"):
        BrodenSource(root, split="test")
    with pytest.raises(ValueError, match="size must be"):
        BrodenSource(root, size=(0, 4))
    bad = tmp_path / "bad"
    write_broden(str(bad))
    with open(bad / "index.csv") as f:
        rows = list(csv.reader(f))
    rows[1][rows[0].index("ih")] = "20"  # one image of another size
    with open(bad / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(ValueError, match="differ in image size"):
        BrodenSource(str(bad))
    with open(bad / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows([r[:-1] for r in rows])
    with pytest.raises(ValueError, match="lacks column"):
        BrodenSource(str(bad))
    os.remove(bad / "c_part.csv")
    with pytest.raises(FileNotFoundError, match="c_part.csv"):
        BrodenSource(str(bad))


def test_segmenter_reads_the_batch(broden):
    src = BrodenSource(broden[0])
    seg = BrodenSegmenter(src)
    assert seg.labels == src.seg_labels and seg.num_layers == 9 and seg.reads_batch
    b = src.batch(0, 2)
    np.testing.assert_array_equal(seg.segment(b), b["seg"])
    with pytest.raises(TypeError, match="reads the batch"):
        seg(b["image"])
    with pytest.raises(ValueError, match="broden:DIR"):
        BrodenSegmenter(object())

    class Wrapper:  # e.g. the CLI's first-n-images view
        inner = src

    assert BrodenSegmenter(Wrapper()).labels == src.seg_labels


W = np.array([[1, 0, 2, -1, 1], [0, 1, 1, 2, -1], [1, 1, 0, 1, 2]], np.float32)


def features(image):
    """``[b, 16, 16, 3]`` -> ``[b, 8, 8, 5]``: small integers, exact in float32
    whatever the batch, so NumPy sees the same values."""
    return image[:, ::2, ::2, :].__mul__(4).round() @ W


def compute(batch):
    return features(jnp.asarray(batch["image"])), jnp.asarray(batch["seg"])


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["pnas", "netdissect"])
def test_dissect_with_both_iou_rules_equals_numpy(broden, rule, tmp_path):
    root, images, seg, _ = broden
    src = BrodenSource(root)
    acts = features(images.astype(np.float32) / 255)
    q = 0.1
    flat = acts.reshape(-1, acts.shape[-1])
    t = -np.sort(-flat, axis=0)[int(np.ceil(q * len(flat))) - 1]
    labels = src.seg_labels
    cats = labels.category_ids if rule == "netdissect" else None
    want = netdissect_oracle.iou(acts, seg, t, len(labels), cats)
    other = netdissect_oracle.iou(acts, seg, t, len(labels),
                                  None if cats else labels.category_ids)
    assert np.abs(want - other).max() > 0.01  # the two rules differ on this data
    for budget in (None, 8):  # one pass, radix passes
        r = dissect(compute, src, labels, quantile=q, batch_size=4, progress=False,
                    budget=budget, iou_rule=rule, devices=jax.local_devices()[:1])
        np.testing.assert_array_equal(r.thresholds, t)
        np.testing.assert_allclose(r.iou, want, rtol=0, atol=1e-15)
        assert r.iou_rule == rule
        if cats is not None:
            np.testing.assert_array_equal(
                r.category_area, netdissect_oracle.category_area(acts, seg, t, cats))
        else:
            assert r.category_area is None
    # saved and loaded, and as NetDissect's CSV in category.csv's order
    r.save(str(tmp_path / "r.npz"))
    back = DissectResult.load(str(tmp_path / "r.npz"))
    assert back.iou_rule == rule
    np.testing.assert_array_equal(back.union_unit_area(), r.union_unit_area())
    table = read_csv(write_csv(r, str(tmp_path / "tally.csv"), src.categories))
    assert table.categories == CATEGORIES
    np.testing.assert_array_equal(table.score, r.best_iou)
    part = labels.category_names.index("part")
    side = r.category_area[:, part] if cats is not None else r.unit_area
    np.testing.assert_array_equal(table.columns["part"].activation, side)
    with pytest.raises(ValueError, match="iou_rule must be"):
        dissect(compute, src, labels, progress=False, iou_rule="paper")
