"""The report: SVG chart counts, thumbnails, pages; the unit-card page rendered in
headless Chromium with its filters applied through the URL hash."""

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from html.parser import HTMLParser
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from jaxdissect import report
from jaxdissect.report.svg import concept_bargraph
from jaxdissect.report.thumbs import highlight

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium"
                                        if os.path.exists("/usr/bin/chromium") else None)


def fake_result(n_units=12, seed=0):
    rng = np.random.default_rng(seed)
    cats = {"sky": "object", "tree": "object", "roof": "part", "wood": "material",
            "red": "color"}
    names = list(cats)
    units = []
    for u in range(n_units):
        lab = names[rng.integers(len(names))]
        iou = float(np.round(rng.random() * 0.2, 3))
        units.append({"unit": u, "label": lab, "category": cats[lab], "iou": iou,
                      "labelled": iou > 0.04, "image": None})
    return {"model": "tiny", "layer": "conv5_3", "quantile": 0.01, "miniou": 0.04,
            "num_images": 50, "segmenter": "ground truth", "units": units}


def test_svg_bar_per_concept_with_counts():
    labelled = [("sky", "object")] * 3 + [("tree", "object")] + [("red", "color")] * 2 + \
        [("roof", "part")]
    svg = ET.fromstring(concept_bargraph(labelled, title="t"))
    bars = {r.get("data-concept"): int(r.get("data-count")) for r in svg.iter(
        "{http://www.w3.org/2000/svg}rect") if r.get("data-concept")}
    assert bars == dict(Counter(n for n, _ in labelled))
    order = [r.get("data-concept") for r in svg.iter("{http://www.w3.org/2000/svg}rect")
             if r.get("data-concept")]
    assert order == ["sky", "tree", "roof", "red"]  # category order, then count


def test_highlight_matches_numpy_loop():
    rng = np.random.default_rng(0)
    img = rng.random((9, 7, 3)).astype(np.float32)
    mask = rng.random((9, 7)) > 0.6
    got = highlight(img, mask)
    for y in range(9):
        for x in range(7):
            if not mask[y, x]:
                want = img[y, x] * 0.35
            else:
                nb = [(y + dy, x + dx) for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))]
                inside = all(0 <= a < 9 and 0 <= b < 7 and mask[a, b] for a, b in nb)
                want = img[y, x] if inside else np.array([1.0, 0.9, 0.0])
            np.testing.assert_array_equal(got[y, x], (np.clip(want, 0, 1) * 255 + 0.5).astype(
                np.uint8))
    with pytest.raises(ValueError, match="differ in size"):
        highlight(img, mask[:3])


def write_fake_report(tmp_path):
    res = fake_result()
    rng = np.random.default_rng(1)
    strips = {u["unit"]: (rng.random((3, 16, 16, 3)), rng.random((3, 16, 16)) > 0.8)
              for u in res["units"]}
    paths = report.write_unit_thumbnails(str(tmp_path), strips)
    for u in res["units"]:
        u["image"] = paths[u["unit"]]
    return res, report.write_dissection(str(tmp_path), res)


def test_dissection_files(tmp_path):
    res, html_path = write_fake_report(tmp_path)
    assert json.load(open(tmp_path / "report.json"))["units"] == res["units"]
    im = Image.open(tmp_path / res["units"][0]["image"])
    assert im.size == (3 * 96 + 2 * 2, 96)
    text = open(html_path).read()
    assert 'id="report-data"' in text and "concepts.svg" in text


class _Cards(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cards, self.imgs, self.shown = [], [], None
        self._in_shown = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and "card" in (a.get("class") or "").split():
            self.cards.append(a)
        if tag == "img" and self.cards and (a.get("src") or "").startswith("units/"):
            self.imgs.append(a["src"])
        self._in_shown = a.get("id") == "shown"

    def handle_data(self, data):
        if self._in_shown:
            self.shown = int(data)
            self._in_shown = False


def render(url):
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tempfile.mkdtemp()}",
         "--virtual-time-budget=3000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    p = _Cards()
    p.feed(out.stdout)
    return p


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install "
                    "chromium; .ci/run installs it)")
def test_report_renders_cards_and_filters_in_chromium(tmp_path):
    res, html_path = write_fake_report(tmp_path)
    units = res["units"]
    page = render("file://" + os.path.abspath(html_path))
    assert len(page.cards) == len(units) == page.shown
    assert len(page.imgs) == len(units)
    for src in page.imgs:
        assert os.path.exists(tmp_path / src)
    ious = [float(c["data-iou"]) for c in page.cards]
    assert ious == sorted(ious, reverse=True)  # default sort: IoU, descending
    # a filtered view through the URL hash
    page = render("file://" + os.path.abspath(html_path) + "#cat=object&miniou=0.05&sort=unit")
    want = [u["unit"] for u in units if u["category"] == "object" and u["iou"] >= 0.05]
    assert want, "fixture should leave some cards"
    assert [int(c["data-unit"]) for c in page.cards] == want
    assert page.shown == len(want)
    assert all(c["data-category"] == "object" for c in page.cards)


def test_experiment_pages_and_index(tmp_path):
    ks = [1, 2, 5]
    C, U = 3, 5
    abl = {"num_units": U, "num_classes": C, "ks": ks,
           "baseline_val": {"precision": [0.9, 0.8, np.nan], "recall": [0.9, 0.7, 0.6],
                            "balanced_accuracy": [0.9, 0.8, 0.7]},
           "removed_top_k_ba": [[0.8, 0.7, 0.5]] * C, "kept_top_k_ba": [[0.6, 0.7, 0.9]] * C,
           "ranking": [list(range(U))] * C, "curves": {"1": {"k": [1, 2, 3, 4],
                                                              "removed": [.7, .6, .5, .5],
                                                              "kept": [.5, .6, .7, .8]}},
           "importance_vs_iou": {"cutoff": 4, "rows": [
               {"classes": 0, "at_least": False, "units": 2, "mean_iou": 0.05, "stderr": 0.01},
               {"classes": 7, "at_least": True, "units": 3, "mean_iou": 0.1, "stderr": None}]}}
    from jaxdissect.experiments.ablate import summarize
    abl["summary"] = summarize(abl, k=5)
    p = report.write_ablation(str(tmp_path / "ablate"), abl, ["a", "b", "c"],
                              [("sky", "object", 0.1)] * U)
    text = open(p).read()
    for f in ("ablation_classes.png", "ablation_k.png", "importance_vs_iou.png", "curve_1.png"):
        assert f in text and os.path.getsize(tmp_path / "ablate" / f) > 1000
    # 80% -> 50%: (0.8 - 0.5) / (0.8 - 0.5) = 100% of the way to chance
    assert abl["summary"]["fraction_of_way_to_chance"] == pytest.approx(1.0)
    assert "100% of the way to chance" in text
    assert json.load(open(tmp_path / "ablate" / "ablation.json"))["baseline_val"][
        "precision"][2] is None
    labels = {"names": ["-", "tree", "door", "sky"], "categories": ["", "object"] * 2}
    inter = {"labels": labels, "baseline_share": [0.3, 0.2, 0.1, 0.4],
             "unit_ablation_delta": np.zeros((4, 4)).tolist(),
             "removal": {"tree": {"n_units": [0, 1, 2], "baseline_share": 0.2,
                                  "removed_fraction": [0, 0.3, 0.6],
                                  "ci99_low": [0, 0.2, 0.5], "ci99_high": [0, 0.4, 0.7]}},
             "insertion": {"door": {"contexts": [
                 {"name": "tree", "category": "object", "count": 40, "mean_added": 0.02,
                  "stderr": 0.002},
                 {"name": "sky", "category": "object", "count": 40, "mean_added": 0.001,
                  "stderr": 0.001}], "grid": [2, 2], "per_location_mean_added": [[0, 1], [1, 0]],
                 "differs_by_context": {"z": 9.4, "significant_99": True, "highest": "tree",
                                        "lowest": "sky"}}}}
    p = report.write_intervention(str(tmp_path / "intervene"), inter)
    text = open(p).read()
    assert "removes 60%" in text and "removal_tree.png" in text
    assert "the most removed is 60% (99% CI 50% to 70%) with its 2 best units" in text
    parts = [{"title": "ablation", "href": "ablate/ablation.html"},
             {"title": "gen", "href": "intervene/intervention.html"}]
    idx = report.write_index(str(tmp_path), parts)
    links = re.findall(r'href="([^"]+)"', open(idx).read())
    assert all(os.path.exists(tmp_path / link) for link in links) and len(links) == 2
