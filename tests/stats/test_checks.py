"""Data that does not fit: non-finite activations and out-of-range labels stop a
dissection with one error naming the unit (or value) and the image, identically on the
one-pass and the radix paths; the upsampler keeps a NaN where it is; an unreadable
image in a folder is named, or skipped with --skip-bad-images and counted."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxdissect import cli
from jaxdissect.data.folder import ImageFolderSource
from jaxdissect.experiments.dissect import dissect
from jaxdissect.stats import Upsampler
from tests.experiments.test_dissect import LABELS, UP, compute, random_source
from tests.support.tiny_checkpoints import tiny_vgg_pth

PATHS = {"one pass": None, "radix": 8}  # budget: None picks the one pass here


def run(source, budget):
    return dissect(compute, source, LABELS, upsample=UP, quantile=0.05, batch_size=4,
                   budget=budget, progress=False)


@pytest.mark.parametrize("value, kind", [(np.nan, "nan"), (np.inf, "+inf"),
                                         (-np.inf, "-inf")])
def test_non_finite_activation_names_unit_and_image_on_both_paths(value, kind):
    messages = []
    for budget in PATHS.values():
        src = random_source()
        src.arrays["acts"][13, 2, 4, 2] = value   # unit 2, image 13
        src.arrays["acts"][17, 0, 0, 1] = np.nan  # a later image: not the one named
        with pytest.raises(ValueError) as e:
            run(src, budget)
        messages.append(str(e.value))
    assert messages[0] == messages[1]
    assert f"unit 2 has a non-finite activation ({kind}) in image 13" in messages[0]
    assert "\n" not in messages[0]


@pytest.mark.parametrize("label", [len(LABELS), 99, -1])
def test_label_outside_the_label_set_names_value_and_image_on_both_paths(label):
    messages = []
    for budget in PATHS.values():
        src = random_source()
        src.arrays["seg"][9, 1, 3, 3] = label
        with pytest.raises(ValueError) as e:
            run(src, budget)
        messages.append(str(e.value))
    assert messages[0] == messages[1]
    assert f"segmentation label {label} in image 9 is outside 0..{len(LABELS) - 1}" \
        in messages[0]


@pytest.mark.slow
def test_finite_data_still_dissects_alike_on_both_paths():
    a, b = (run(random_source(), budget) for budget in PATHS.values())
    np.testing.assert_array_equal(a.thresholds, b.thresholds)
    np.testing.assert_array_equal(a.iou, b.iou)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_upsampler_keeps_a_non_finite_value_local(value):
    rng = np.random.default_rng(1)
    acts = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    acts[1, 2, 3, 1] = value
    up = Upsampler.for_layers([(3, 1, 1), (2, 2, 0), (3, 1, 1)], (12, 12), (12, 12))
    got = np.asarray(up(jnp.asarray(acts)))
    # oracle: NumPy on the finite values, NaN where the bad input has non-zero weight
    wy, wx = np.asarray(up.wy, np.float64), np.asarray(up.wx, np.float64)
    clean = np.where(np.isfinite(acts), acts, 0).astype(np.float64)
    want = np.einsum("yi,xj,bijc->byxc", wy, wx, clean)
    bad = np.zeros(got.shape, bool)
    bad[1, :, :, 1] = (wy[:, 2] != 0)[:, None] & (wx[:, 3] != 0)[None, :]
    assert 0 < bad.sum() <= 16  # a few pixels, not the map
    assert np.isnan(got[bad]).all()
    np.testing.assert_allclose(got[~bad], want[~bad], rtol=1e-5, atol=1e-6)
    # and finite inputs are unchanged
    np.testing.assert_allclose(np.asarray(up(jnp.asarray(clean, jnp.float32))), want,
                               rtol=1e-5, atol=1e-6)


def make_folder(root):
    rng = np.random.default_rng(0)
    for c in ("a_beach", "b_forest"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(
                root / c / f"{i}.jpg")
    good = (root / "a_beach" / "0.jpg").read_bytes()
    (root / "a_beach" / "1.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (root / "b_forest" / "2.jpg").write_bytes(b"not an image at all")  # corrupt
    return [root / "a_beach" / "1.jpg", root / "b_forest" / "2.jpg"]


def test_unreadable_image_named_or_skipped(tmp_path):
    bad = make_folder(tmp_path / "val")
    src = ImageFolderSource(str(tmp_path / "val"))
    with pytest.raises(ValueError, match=r"1\.jpg: cannot read this image") as e:
        src.batch(0, 3)
    assert "\n" not in str(e.value) and "--skip-bad-images" in str(e.value)
    with pytest.raises(ValueError, match=r"b_forest/2\.jpg: cannot read this image"):
        src.batch(5, 6)
    skipping = ImageFolderSource(str(tmp_path / "val"), skip_bad=True)
    assert skipping.num_examples == 4
    assert [p for p, _ in skipping.skipped] == [str(p) for p in bad]
    assert skipping.batch(0, 4)["image"].shape == (4, 224, 224, 3)
    assert skipping.identity()["skipped"] == 2


@pytest.mark.slow
def test_dissect_command_skips_and_reports_bad_images(tmp_path, capsys):
    make_folder(tmp_path / "places" / "val")
    tiny_vgg_pth(str(tmp_path / "m.pth"))
    argv = ["dissect", "--model", str(tmp_path / "m.pth"), "--data", str(tmp_path / "places"),
            "--segmenter", "py:tests.support.tiny_nets:TinySegmenter", "--no-progress",
            "--batch-size", "4"]
    assert cli.main(argv + ["--out", str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err.strip()
    assert "1.jpg: cannot read this image" in err and "\n" not in err
    out = tmp_path / "r2"
    assert cli.main(argv + ["--out", str(out), "--skip-bad-images"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["skipped_images"] == 2 and report["num_images"] == 4
    assert "2 unreadable images skipped" in (out / "report.html").read_text()
