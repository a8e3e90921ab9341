"""The world's ground truth as the image-text model learns it and as the ceiling of
open-vocabulary labels reads it: pixel shares, graded word targets, captions naming the
largest concepts, and labels from a similarity matrix."""

import numpy as np
import pytest

from jaxdissect.experiments.describe import label_similarity
from jaxdissect.experiments.describe_world import truth_similarity
from jaxdissect.world import WorldSource
from jaxdissect.world.imagetext import WORLD_WORDS
from jaxdissect.world.train.imagetext import (
    FULL_SHARE,
    MIN_SHARE,
    captions,
    present,
    shares,
    word_targets,
)
from jaxdissect.world.vocab import LABELS


@pytest.fixture(scope="module")
def world():
    source = WorldSource(6, seed=5, size=64)
    return source, source.render_u8(0, 6)


def test_shares_are_each_concepts_pixels_in_its_layer(world):
    _, r = world
    seg, label = r["seg"], r["label"]
    got = shares(seg, label)
    assert got.shape == (6, len(WORLD_WORDS))
    for i in range(6):
        for c in range(1, len(LABELS)):
            layer = [k for k in range(seg.shape[1]) if (seg[i, k] == c).any()]
            want = sum((seg[i, k] == c).mean() for k in layer)
            assert got[i, c - 1] == pytest.approx(want, abs=1e-6)
        scene = np.zeros(len(WORLD_WORDS) - len(LABELS) + 1)
        scene[label[i]] = 1.0
        np.testing.assert_array_equal(got[i, len(LABELS) - 1:], scene)


def test_targets_presence_and_captions_follow_the_shares(world):
    _, r = world
    share = shares(r["seg"], r["label"])
    t = word_targets(share)
    np.testing.assert_allclose(t, np.minimum(1.0, share / FULL_SHARE), rtol=1e-6)
    has = present(share)
    least = np.array([MIN_SHARE[c] for c in LABELS.categories[1:]])
    np.testing.assert_array_equal(has[:, :len(LABELS) - 1], share[:, :len(LABELS) - 1]
                                  >= least)
    for row, hit, text in zip(share, has, captions(share, r["label"],
                                                   np.random.default_rng(0))):
        named = [LABELS.names.index(w) - 1 for w in text.split(": ")[1].split(", ")]
        rest = [j for j in np.flatnonzero(hit[:len(LABELS) - 1]) if j not in named]
        # the caption names its image's largest present concepts
        assert all(hit[named]) and len(named) == min(4, hit[:len(LABELS) - 1].sum())
        assert not rest or min(row[named]) >= max(row[rest])


def test_truth_similarity_and_labels_from_it(world):
    source, r = world
    sim = truth_similarity(source, chunk=4)
    np.testing.assert_allclose(sim, word_targets(shares(r["seg"], r["label"]))[:, :52],
                               rtol=1e-6)
    # planted: concept j fills images 2j and 2j+1, unit k fires on images 2k and 2k+1
    planted = np.repeat(np.eye(3, dtype=np.float32), 2, axis=0)
    res = label_similarity(planted, planted[:, [2, 0, 1]], ["a", "b", "c"], "wpmi",
                           top_k=2)
    assert res.labels() == ["c", "a", "b"]
    with pytest.raises(ValueError, match="does not fit"):
        label_similarity(sim[:, :3], sim[:, :1], list(LABELS.names[1:]))
