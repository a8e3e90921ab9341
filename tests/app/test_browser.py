"""``jaxdissect serve`` in real headless Chromium (selenium with Debian's chromium and
chromium-driver, installed by .ci/run): on a small world results folder made with the
CLI, filter units, paint a region of a generated image with tree units on and see it
change, switch classifier units off and see the probabilities change; no console
errors."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from jaxdissect import cli
from tests.support.app import serving
from tests.support.browser import chromium, console_errors

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world_results(tmp_path_factory):
    """The world classifier's conv5_3 and the world generator's layer4 dissected on 64
    inputs each (the CLI, tiny sizes)."""
    root = tmp_path_factory.mktemp("world_results")
    for model, sub in (("world-classifier", "classifier"), ("world-generator", "generator")):
        assert cli.main(["dissect", "--model", model, "--num-images", "64", "--out",
                         str(root / sub / "dissect"), "--no-progress"]) == 0
    return root


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def wait(driver, cond, timeout=120, what="condition"):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: cond(d), message=f"timed out waiting for {what}")


def png_pixels(data: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)


def test_browse_paint_and_switch(world_results, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    d = browser
    with serving(world_results) as (url, app):
        keys = {x.id: x.key for x in app.config["RESULTS"].dissections.values()}
        gen, clf = keys["generator/dissect"], keys["classifier/dissect"]

        # ---- browse and filter the generator's units
        d.get(url + "/")
        assert "generator/dissect" in d.page_source
        d.find_element(By.CSS_SELECTOR, f"a.units-link[href='/units/{gen}']").click()
        wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card")) > 0, what="cards")
        report = json.load(open(world_results / "generator" / "dissect" / "report.json"))
        all_units = len(report["units"])
        assert int(d.find_element(By.ID, "shown").text) == all_units
        from collections import Counter
        common = Counter(u["label"] for u in report["units"]
                         if u["labelled"] and u["category"] == "object").most_common(1)[0][0]
        Select(d.find_element(By.ID, "cat")).select_by_value("object")
        d.find_element(By.ID, "label").send_keys(common)
        want = sum(1 for u in report["units"] if u["category"] == "object"
                   and common in u["label"] and u.get("threshold", 1) > 0)
        wait(d, lambda d: int(d.find_element(By.ID, "shown").text) == want,
             what=f"{want} {common} units shown")
        cards = d.find_elements(By.CSS_SELECTOR, ".card")
        assert len(cards) == want > 0
        assert all(c.get_attribute("data-category") == "object" for c in cards)
        ious = [float(c.get_attribute("data-iou")) for c in cards]
        assert ious == sorted(ious, reverse=True)
        cards[0].click()                                    # the unit's own page
        wait(d, lambda d: "IoU with each concept" in d.page_source, what="unit page")
        assert d.find_elements(By.CSS_SELECTOR, "img.strip")

        # ---- paint trees on in the left half of a generated image
        d.get(f"{url}/paint/{gen}")
        wait(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"),
             what="the generated image")
        Select(d.find_element(By.ID, "concept")).select_by_value("tree")
        d.find_element(By.CSS_SELECTOR, "input[name=mode][value=on]").click()
        canvas = d.find_element(By.ID, "canvas")
        chain = ActionChains(d).move_to_element_with_offset(canvas, -100, -100).click_and_hold()
        for dy in range(-100, 101, 25):
            chain = chain.move_to_element_with_offset(canvas, -60, dy)
        chain.release().perform()
        wait(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-painted"),
             what="the painted image")
        src = d.find_element(By.ID, "result").get_attribute("src")
        assert src.startswith("data:image/png;base64,")
        painted = png_pixels(base64.b64decode(src.split(",", 1)[1]))
        import urllib.request
        seed = d.find_element(By.ID, "seed").get_attribute("value")
        with urllib.request.urlopen(f"{url}/api/generate/{gen}?seed={seed}&index=0") as r:
            original = png_pixels(r.read())
        assert painted.shape == original.shape
        w = original.shape[1]
        diff = np.abs(painted - original).mean(-1)
        assert diff[:, : w // 2].mean() > 2.0                 # the brushed half changed
        status = d.find_element(By.ID, "status").text
        assert "tree: 20 units on" in status and "redrawn in" in status

        # ---- switch classifier units off
        d.get(f"{url}/classify/{clf}")
        wait(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-updates"),
             what="first probabilities")

        def probs():
            return [(r.get_attribute("data-name"), r.find_element(By.CLASS_NAME, "p").text)
                    for r in d.find_elements(By.CSS_SELECTOR, "#probs tr.class")]
        before = probs()
        assert len(before) > 1
        assert all("was" in p for _, p in before)
        for box in d.find_elements(By.CSS_SELECTOR, "#switches input.off")[:8]:
            box.click()
        wait(d, lambda d: int(d.find_element(By.TAG_NAME, "body").get_attribute(
            "data-updates")) >= 2 and "8 off" in d.find_element(By.ID, "status").text,
            what="probabilities with 8 units off")
        after = probs()
        assert after != before
        assert all(p.split(" (was ")[0] != p.split(" (was ")[1].rstrip(")")
                   for _, p in after[1:3])
        assert console_errors(d) == []



def test_own_generator_pages_name_bad_input_and_ask_nothing_that_fails(tmp_path, browser):
    """A user's generator (``py:`` spec) behind a results folder: every page loads with
    no failed request, units typed wrong are named on the page and never sent, and
    painting works."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from tests.support.app import fake_results
    fake_results(str(tmp_path / "results"), model="py:tests.support.user_models:linen_generator",
                 units=12, labels=("-", "tree", "sky", "door"), layer="block")
    d = browser
    d.get_log("browser")                                 # start from an empty console
    with serving(tmp_path / "results") as (url, _):
        for path in ("/", "/units/0", "/unit/0/1", "/unit/0/11"):
            d.get(url + path)
            wait(d, lambda d: d.execute_script("return document.readyState") == "complete",
                 what=path)
        wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "h1"), what="unit page")
        d.get(f"{url}/paint/0")
        wait(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"),
             what="the generated image")
        canvas = d.find_element(By.ID, "canvas")

        def brush():
            ActionChains(d).move_to_element_with_offset(canvas, -50, -50).click_and_hold() \
                .move_to_element_with_offset(canvas, 50, 50).release().perform()
        d.find_element(By.ID, "units").send_keys("3, abc")
        brush()
        status = d.find_element(By.ID, "status")
        wait(d, lambda d: "abc" in status.text, what="the units error")
        assert 'units: "abc" in "3, abc" is not a unit number' in status.text
        assert not d.find_element(By.TAG_NAME, "body").get_attribute("data-painted")
        d.find_element(By.ID, "units").clear()
        d.find_element(By.ID, "units").send_keys("3 5")
        brush()
        wait(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-painted"),
             what="the painted image")
        assert "2 units on" in status.text
        d.find_element(By.ID, "units").clear()
        d.find_element(By.ID, "n").clear()
        d.find_element(By.ID, "n").send_keys("99")
        d.find_element(By.ID, "paint").click()
        wait(d, lambda d: "99" in status.text, what="the best-units error")
        assert 'best units must be a whole number from 1 to 12, got "99"' in status.text
        assert console_errors(d) == []
