"""Close-up world images (render_closeup, render_mixed) and the segmenter's mixed source."""

import numpy as np
import pytest

from jaxdissect.world import WorldSource
from jaxdissect.world.generator_quality import label_counts, real_object_counts
from jaxdissect.world.raster import rasterise
from jaxdissect.world.scenes import scene_tables
from jaxdissect.world.source import class_indices, render, render_closeup, render_mixed
from jaxdissect.world.train.classifier import WithCloseups
from jaxdissect.world.vocab import label_id


def _windows(big: np.ndarray, small: np.ndarray) -> list[tuple[int, int]]:
    """Every (y, x) where ``small`` [s, s, ...] equals a window of ``big`` [B, B, ...]."""
    s, b = small.shape[0], big.shape[0]
    return [(y, x) for y in range(b - s + 1) for x in range(b - s + 1)
            if np.array_equal(big[y:y + s, x:x + s], small)]


def test_closeup_is_a_window_of_the_larger_render_centred_on_a_door():
    idx = class_indices(77, ["village"], 12)
    close = render_closeup(77, idx, 32, zoom=1.5)
    assert close["image"].shape == (12, 32, 32, 3) and close["seg"].shape == (12, 4, 32, 32)
    tables, labels, noise = scene_tables(77, idx, 48)
    big, big_seg = rasterise(tables, 48, noise)
    np.testing.assert_array_equal(close["label"], labels)
    door = label_id("door")
    for j in range(len(idx)):
        found = _windows(big[j], close["image"][j])
        assert found, f"image {j} is not a window of its 48x48 render"
        y, x = found[0]
        np.testing.assert_array_equal(close["seg"][j], big_seg[j][:, y:y + 32, x:x + 32])
        cols = np.flatnonzero((close["seg"][j, 0] == door).any(0))
        assert cols.size, f"image {j} shows no door"
        if 0 < x < 16:  # not clipped at an edge: some door's column is centred
            runs = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
            assert min(abs(r.mean() - 15.5) for r in runs) <= 2.0, (j, cols)


def test_closeups_enlarge_doors_and_keep_sky_and_trees():
    idx = class_indices(78, ["village"], 300)
    share = lambda seg, name: float((seg[:, 0] == label_id(name)).mean())
    whole, close = render(78, idx, 32)["seg"], render_closeup(78, idx, 32)["seg"]
    assert share(close, "door") >= 1.3 * share(whole, "door")
    assert share(close, "house") >= 1.3 * share(whole, "house")
    for name in ("sky", "tree", "grass", "window"):
        assert share(close, name) >= 0.02, (name, share(close, name))


def test_closeup_bad_input():
    with pytest.raises(ValueError, match="close-up"):
        render_closeup(0, [0], 48)
    with pytest.raises(ValueError, match="close-up"):
        render_closeup(0, [0], 32, zoom=0.5)
    with pytest.raises(ValueError, match="seed"):
        render_closeup(-1, [0], 32)


def test_segmenter_training_source_mixes_in_closeups():
    src = WorldSource(20, seed=5, size=64, threads=1)
    mixed = WithCloseups(src, every=4).render_u8(2, 13)
    plain = src.render_u8(2, 13)
    idx = np.arange(2, 13)
    close_rows = np.flatnonzero(idx % 4 == 3)
    close = render_closeup(5, idx[close_rows], 64)
    for key in ("image", "seg"):
        np.testing.assert_array_equal(mixed[key][close_rows], close[key])
        keep = np.setdiff1d(np.arange(idx.size), close_rows)
        np.testing.assert_array_equal(mixed[key][keep], plain[key][keep])
    with pytest.raises(ValueError, match="period"):
        WithCloseups(src, every=0)


def test_render_mixed_and_closeup_reference_counts():
    idx = class_indices(79, ["village"], 10)
    mixed = render_mixed(79, idx, 32, every=2)
    whole, close = render(79, idx, 32), render_closeup(79, idx, 32)
    odd = idx % 2 == 1
    np.testing.assert_array_equal(mixed["image"][odd], close["image"][odd])
    np.testing.assert_array_equal(mixed["seg"][~odd], whole["seg"][~odd])
    with pytest.raises(ValueError, match="period"):
        render_mixed(79, idx, 32, every=0)
    # the real reference for a close-up generator: its training images' ground truth
    seg = lambda images: np.zeros((len(images), 4, 64, 64), np.int32)
    truth, _ = real_object_counts(seg, 10, 79, 32, batch=4, classes=["village"], closeup=1.5)
    np.testing.assert_array_equal(truth, label_counts(close["seg"][:, 0]))
    truth, _ = real_object_counts(seg, 10, 79, 32, batch=4, classes=["village"], closeup=1.5,
                                  closeup_every=2)
    np.testing.assert_array_equal(truth, label_counts(mixed["seg"][:, 0]))
    np.testing.assert_array_equal(render_mixed(79, idx, 32, every=1)["seg"], close["seg"])
