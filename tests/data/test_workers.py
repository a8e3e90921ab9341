"""Images decoded on worker threads: the same pixels as one image at a time (and as
Pillow and NumPy directly), in order, and an unreadable image named as before."""

import os

import numpy as np
import pytest
from PIL import Image

from jaxdissect.data import workers
from jaxdissect.data.folder import ImageFolderSource


def make_folder(root, n=9):
    rng = np.random.default_rng(0)
    for i in range(n):
        d = os.path.join(root, f"c{i % 2}")
        os.makedirs(d, exist_ok=True)
        h, w = rng.integers(30, 200, 2)
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(os.path.join(d, f"{i}.jpg" if i % 3 else f"{i}.png"))
    return root


def oracle(path, size, policy):
    """The transform written out with Pillow and NumPy."""
    h, w = size
    im = Image.open(path).convert("RGB")
    if policy == "stretch":
        return np.asarray(im.resize((w, h), Image.BILINEAR), np.float32) / 255.0
    rh, rw = round(h * 256 / 224), round(w * 256 / 224)
    x = np.asarray(im.resize((rw, rh), Image.BILINEAR), np.float32) / 255.0
    return x[(rh - h) // 2:(rh - h) // 2 + h, (rw - w) // 2:(rw - w) // 2 + w]


@pytest.mark.parametrize("policy,size", [("resize-crop", (56, 48)), ("stretch", (40, 40))])
def test_workers_give_the_same_pixels(tmp_path, policy, size):
    root = make_folder(str(tmp_path))
    one = ImageFolderSource(root, size, policy, workers=1)
    many = ImageFolderSource(root, size, policy, workers=3)
    a, b = one.batch(0, 9), many.batch(0, 9)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
    assert a["image"].dtype == np.float32 and a["image"].shape == (9, *size, 3)
    for i, p in enumerate(one.paths):
        np.testing.assert_array_equal(a["image"][i], oracle(p, size, policy))
    np.testing.assert_array_equal(many.batch(2, 5)["image"], a["image"][2:5])
    assert many.batch(4, 4)["image"].shape == (0, *size, 3)


def test_the_first_unreadable_image_is_named(tmp_path):
    root = make_folder(str(tmp_path))
    src = ImageFolderSource(root, (32, 32), workers=4)
    for i in (3, 6):
        with open(src.paths[i], "wb") as f:
            f.write(b"not an image")
    with pytest.raises(ValueError, match=f"{src.paths[3]}: cannot read this image"):
        src.batch(0, 9)
    skipping = ImageFolderSource(root, (32, 32), skip_bad=True, workers=4)
    assert [p for p, _ in skipping.skipped] == [src.paths[3], src.paths[6]]
    assert skipping.num_examples == 7


def test_worker_counts_are_checked(monkeypatch):
    monkeypatch.setenv(workers.ENV, "3")
    assert workers.default_workers() == 3
    monkeypatch.setenv(workers.ENV, "none")
    with pytest.raises(ValueError, match="positive integer"):
        workers.default_workers()
    monkeypatch.delenv(workers.ENV)
    assert 1 <= workers.default_workers() <= 16
    with pytest.raises(ValueError, match="positive integer"):
        ImageFolderSource("/nonexistent", workers=0)
    assert workers.map_ordered(lambda x: x * x, range(7), 3) == [x * x for x in range(7)]
