"""The intervention and paint pages in headless Chromium: every ``<img>`` is there,
decoded, and its PNG has exactly the size its ``width`` / ``height`` attributes state
(pictures are written at the size they are shown, 1:1); the edited-image pictures
have tiles of at least 128 pixels. Results from the CLI on a tiny ProGAN .pth with a
fixed colour segmenter (12 z samples)."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from jaxdissect import cli
from jaxdissect.report.pictures import GAP, TILE
from tests.support.browser import chromium, console_errors
from tests.support.tiny_checkpoints import tiny_gan_pth

pytestmark = pytest.mark.slow     # about 20 s on 2 loaded cores

SEG = "py:tests.support.tiny_nets:TinySegmenter"

# every <img>: its attributes, whether the browser decoded it, and its natural size
IMAGES_JS = """
return [...document.images].map(im => ({
  src: im.getAttribute('src'), width: im.getAttribute('width'),
  height: im.getAttribute('height'), complete: im.complete,
  naturalWidth: im.naturalWidth, naturalHeight: im.naturalHeight}));
"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    d = tmp_path_factory.mktemp("pictures")
    tiny_gan_pth(str(d / "g.pth"))
    common = ["--model", str(d / "g.pth"), "--segmenter", SEG, "--num-samples", "12",
              "--batch-size", "6", "--no-progress"]
    assert cli.main(["intervene", *common, "--max-remove", "3", "--insert-units", "2",
                     "--remove", "green", "--insert", "blue", "--chunk", "4", "--out",
                     str(d / "intervene")]) == 0
    assert cli.main(["paint", *common, "--num-z", "3", "--units", "3", "--edit",
                     "green:off:0,0,1,0.5", "--edit", "blue:on:0.25,0.5,0.75,1", "--out",
                     str(d / "paint")]) == 0
    return d


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def images_on(driver, path):
    driver.get("file://" + os.path.abspath(path))
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, 30, poll_frequency=0.1).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
        and d.execute_script("return [...document.images].every(i => i.complete)"),
        message=f"images of {path} not loaded")
    return driver.execute_script(IMAGES_JS)


def check_images(images, folder):
    assert images, "the page shows no image"
    for im in images:
        assert im["width"] is not None and im["height"] is not None, im["src"]
        assert im["complete"] and im["naturalWidth"] > 0, f"{im['src']} not decoded"
        # the stated size is the file's size: pictures are shown at 1:1
        assert (im["naturalWidth"], im["naturalHeight"]) == (int(im["width"]),
                                                             int(im["height"])), im
        with Image.open(os.path.join(folder, im["src"])) as f:
            assert f.size == (im["naturalWidth"], im["naturalHeight"])


def test_intervention_and_paint_pages_show_their_pictures(pages, browser):
    folder = pages / "intervene" / "intervene"
    images = images_on(browser, folder / "intervention.html")
    check_images(images, folder)
    records = json.load(open(folder / "pictures.json"))["pictures"]
    assert {(r["kind"], r["concept"]) for r in records} == {("removal", "green"),
                                                            ("insertion", "blue")}
    shown = {im["src"] for im in images}
    for r in records:
        assert r["src"] in shown
        rows, cols = ((2, len(r["samples"])) if r["kind"] == "removal" else
                      (len(r["samples"]), 1 + len(r["locations"])))
        # tiles of at least TILE pixels (the 16x16 generator upscaled 8x)
        assert (r["width"] + GAP) % cols == 0 and (r["height"] + GAP) % rows == 0
        assert (r["width"] + GAP) // cols - GAP >= TILE
        assert (r["height"] + GAP) // rows - GAP >= TILE
    # the command's index leads with the same pictures
    index = images_on(browser, pages / "intervene" / "index.html")
    check_images(index, pages / "intervene")
    assert [im["src"] for im in index[:len(records)]] == [
        "intervene/" + r["src"] for r in records]

    paint = images_on(browser, pages / "paint" / "paint.html")
    check_images(paint, pages / "paint")
    grid = [im for im in paint if im["src"] == "painted.png"]
    assert len(grid) == 1
    # 3 latents x (unedited + 2 edits), tiles of 128 pixels
    assert (grid[0]["naturalWidth"], grid[0]["naturalHeight"]) == (
        3 * TILE + 2 * GAP, 3 * TILE + 2 * GAP)
    assert console_errors(browser) == []
