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
    from jaxdissect.experiments.ablate import AblationResult, ClassCurve, ClassMetrics
    from jaxdissect.experiments.intervene import (
        InsertionSummary,
        InterventionResult,
        RemovalCurve,
    )
    from jaxdissect.labels import LabelSet

    ks = (1, 2, 5)
    C, U = 3, 5
    metrics = ClassMetrics(np.array([0.9, 0.8, np.nan]), np.array([0.9, 0.7, 0.6]),
                           np.full(3, 0.8), np.full(3, 0.8), np.array([0.8, 0.8, 0.8]))
    rng = np.random.default_rng(0)
    # replicates around 0.8 -> 0.5 (removed) and 0.8 -> 0.65 (kept: half the margin over
    # chance, on the criterion)
    boot = np.stack([0.8 + rng.normal(0, 0.01, (200, 3)), 0.5 + rng.normal(0, 0.01, (200, 3)),
                     0.65 + rng.normal(0, 0.01, (200, 3))], -1)
    abl = AblationResult(
        layer="conv5_3", class_names=("a", "b", "c"), ks=ks, baseline_train=metrics,
        baseline_val=metrics, single_unit_ba_train=np.zeros((U, C)),
        single_unit_logp_train=np.zeros((U, C)), ranking=np.tile(np.arange(U), (C, 1)),
        removed_top_k_ba=np.tile([0.8, 0.7, 0.5], (C, 1)),
        kept_top_k_ba=np.tile([0.6, 0.7, 0.65], (C, 1)),
        curves={1: ClassCurve(np.arange(1, 5), np.array([.7, .6, .5, .5]),
                              np.array([.5, .6, .7, .8]))},
        importance_counts=np.array([3, 3, 3, 3, 0]), unit_iou=np.linspace(0, 0.2, U),
        train_examples=40, val_examples=30, val_class_counts=np.array([10, 10, 10]),
        bootstrap=boot)
    p = report.write_ablation(str(tmp_path / "ablate"), abl, [("sky", "object", 0.1)] * U)
    text = open(p).read()
    for f in ("ablation_classes.png", "ablation_k.png", "importance_vs_iou.png", "curve_1.png"):
        assert f in text and os.path.getsize(tmp_path / "ablate" / f) > 1000
    # 80% -> 50%: (0.8 - 0.5) / (0.8 - 0.5) = 100% of the way to chance
    s = abl.summary(k=5)
    assert s["fraction_of_way_to_chance"] == pytest.approx(1.0)
    assert "100.0% of the way to chance" in text and "30 val images" in text
    removal, keep = abl.findings()
    assert removal.holds and removal.low > 0.5          # the whole interval clears 50%
    # half the margin meets the criterion but its interval straddles it: no support
    assert keep.estimate == pytest.approx(0.5) and keep.low < 0.5 < keep.high
    assert not keep.holds and keep.applies
    saved = json.load(open(tmp_path / "ablate" / "ablation.json"))
    assert saved["baseline_val"]["precision"][2] is None
    assert saved["findings"][0]["holds"] is True
    assert AblationResult.load(str(tmp_path / "ablate" / "ablation.npz")).to_json() == \
        abl.to_json()
    labels = LabelSet.from_pairs([("tree", "object"), ("door", "object"), ("sky", "object")])
    boot_n = rng.poisson(1.0, (200, 4)) * np.array([0, 400, 0, 400])    # replicates' edits
    inter = InterventionResult(
        layer="layer4", labels=labels, num_units=4,
        baseline_share=np.array([0.3, 0.2, 0.1, 0.4]), baseline_stderr=np.full(4, 0.01),
        unit_ablation_delta=np.zeros((4, 4)), unit_ablation_samples=32,
        removal={"tree": RemovalCurve("tree", np.array([3, 1]), np.array([0, 1, 2]), 0.2,
                                      np.array([0, 0.3, 0.6]), np.array([0, 0.04, 0.02]),
                                      64, boot_baseline=0.2 + rng.normal(0, 0.01, 200),
                                      significant=np.array([True, False]))},
        insertion={"door": InsertionSummary(
            "door", np.array([0, 1]), np.array([1, 3]), ("tree", "sky"),
            ("object", "object"), np.array([400, 400]), np.array([0.02, 0.001]),
            np.array([0.002, 0.001]), np.array([[0, 1], [1, 0]]), 48,
            significant=np.array([True, False]), boot_sum=boot_n * [0, 0.02, 0, 0.001],
            boot_n=boot_n)})
    p = report.write_intervention(str(tmp_path / "intervene"), inter)
    text = open(p).read()
    assert "removes 60.0%" in text and "removal_tree.png" in text
    # the largest set measured (2 < 20 asked) with its 99% interval, and the most
    # removed (also n = 2) with Bonferroni over the 2 sizes tried
    z = 2.807033768343811
    assert "removes 60.0% (99% CI 54.8% to 65.2%)" in text
    assert f"the most removed is 60.0% with its 2 best units (99% CI {0.6 - z * 0.02:.1%} to " \
        f"{0.6 + z * 0.02:.1%}" in text
    assert "64 samples" in text and "insertion of door 48" in text
    f_rm, f_ctx, f_ins = inter.findings()
    assert f_rm.holds and f_ins.holds           # every replicate's gap is 0.019
    assert f_ins.kind == "exploratory" and f_rm.kind == f_ctx.kind == "pre-registered"
    assert not f_ctx.applies and "window or house have 0 edits" in f_ctx.reason
    assert "[not applicable] (pre-registered)" in f_ctx.plain()
    parts = [{"title": "ablation", "href": "ablate/ablation.html"},
             {"title": "gen", "href": "intervene/intervention.html"}]
    idx = report.write_index(str(tmp_path), parts)
    links = re.findall(r'href="([^"]+)"', open(idx).read())
    assert all(os.path.exists(tmp_path / link) for link in links) and len(links) == 2


def test_unit_thumbnails_hold_one_run(tmp_path):
    """Strips are written atomically, and a unit the new run has no strip for loses the
    old one (a folder never mixes two runs' thumbnails)."""
    imgs, masks = np.zeros((2, 8, 8, 3), np.float32), np.ones((2, 8, 8), bool)
    first = report.write_unit_thumbnails(str(tmp_path), {0: (imgs, masks), 5: (imgs, masks)})
    assert sorted(os.listdir(tmp_path / "units")) == ["unit_0000.png", "unit_0005.png"]
    second = report.write_unit_thumbnails(str(tmp_path), {0: (imgs, masks)})
    assert second == {0: first[0]}
    assert os.listdir(tmp_path / "units") == ["unit_0000.png"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install "
                    "chromium; .ci/run installs it)")
def test_unit_cards_show_p_values_and_intervals(tmp_path):
    res = fake_result()
    tested = [u for u in res["units"] if u["labelled"]]
    for i, u in enumerate(tested):
        u.update(p_value=0.0005 * (i + 1), iou_low=u["iou"] - 0.01, iou_high=u["iou"] + 0.02,
                 null_iou=0.004)
    res["significance"] = {"tested": len(tested), "permutations": 1000, "level": 0.95,
                           "fdr": 0.01, "discoveries": 2, "max_p": None}
    path = report.write_dissection(str(tmp_path), res)
    assert json.load(open(tmp_path / "report.json"))["units"][0].keys() >= {"unit", "iou"}
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tempfile.mkdtemp()}", "--virtual-time-budget=3000",
         "--dump-dom", "file://" + os.path.abspath(path)],
        capture_output=True, text=True, timeout=120)
    sig = re.findall(r'<div class="sig">([^<]*)</div>', out.stdout)
    assert len(sig) == len(tested)
    first = tested[0]
    assert (f"p 5.0e-4, IoU {first['iou'] - 0.01:.3f}-{first['iou'] + 0.02:.3f}, "
            f"chance 0.004") in sig
    assert "2 of " + str(len(tested)) + " labels survive a 1% false-discovery rate" in out.stdout
