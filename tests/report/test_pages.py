"""The report pages read naturally: silent units shown as such, a concept chart that
grows with the concepts (labels never overlap), titles without repeated words."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET

import numpy as np

from jaxdissect.report import write_dissection
from jaxdissect.report.svg import concept_bargraph

NS = "{http://www.w3.org/2000/svg}"


def _result(silent=(3,)):
    units = []
    for u in range(6):
        fires = u not in silent
        units.append({"unit": u, "label": "sky" if u % 2 else "tree", "category": "object",
                      "iou": 0.2 if fires else 0.0, "labelled": fires, "fires": fires,
                      "threshold": 1.0 if fires else 0.0,
                      "image": f"units/unit_{u:04d}.png" if fires else None})
    return {"model": "world-generator", "layer": "layer4", "quantile": 0.01, "miniou": 0.04,
            "num_images": 10, "segmenter": "world", "units": units}


def test_silent_units_are_not_labelled(tmp_path):
    res = _result()
    res["units"][3].update(label="sky", labelled=True, image="units/unit_0003.png")  # stale
    page = open(write_dissection(str(tmp_path), res)).read()
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', page).group(1))
    u3 = data["units"][3]
    assert u3["fires"] is False and u3["labelled"] is False and u3["image"] is None
    assert "1 never fire" in page and "never fires" in page
    assert "<title>world-generator layer4: dissection</title>" in page
    assert "layer layer4" not in page
    svg = ET.parse(tmp_path / "concepts.svg").getroot()
    counts = {r.get("data-concept"): int(r.get("data-count")) for r in svg.iter(NS + "rect")
              if r.get("data-concept")}
    assert counts == {"tree": 3, "sky": 2}            # unit 3 (sky) not counted


def _labels(svg):
    return [(float(t.get("x")), t.text) for t in svg.iter(NS + "text")
            if "rotate(-90" in (t.get("transform") or "") and t.text != "labelled units (count)"]


def test_concept_chart_grows_and_labels_do_not_overlap():
    widths = []
    for n in (3, 30, 120):
        labelled = [(f"concept number {i}", "object" if i % 3 else "material")
                    for i in range(n) for _ in range(1 + i % 4)]
        svg = ET.fromstring(concept_bargraph(labelled, title="Labelled units per concept"))
        widths.append(float(svg.get("width")))
        xs = sorted(x for x, _ in _labels(svg))
        assert len(xs) == n
        assert np.diff(xs).min() >= 11 + 2            # vertical 11 px labels, 2 px apart
        longest = max(len(f"concept number {i}") for i in range(n))
        assert float(svg.get("height")) > 0.5 * 11 * longest   # room for the labels
        texts = [t.text for t in svg.iter(NS + "text")]
        assert "Labelled units per concept" in texts and "labelled units (count)" in texts
    assert widths[0] < widths[1] < widths[2]
    assert widths[2] > 120 * 13


def test_every_plot_has_a_title_and_labelled_axes(tmp_path, monkeypatch):
    from jaxdissect.report import applications, plots
    figs = []

    def keep(fig, path):
        figs.append((os.path.basename(path), fig))
        return os.path.basename(path)
    monkeypatch.setattr(plots, "_save", keep)
    p = lambda name: str(tmp_path / name)   # noqa: E731
    names = ["a", "b", "c"]
    rng = np.random.default_rng(0)
    plots.ablation_classes(p("classes.png"), names, rng.random(3), rng.random(3),
                           rng.random(3), 2)
    plots.ablation_k(p("k.png"), [1, 2, 4], rng.random((3, 3)), rng.random((3, 3)),
                     rng.random(3))
    plots.ablation_curve(p("curve.png"), "a", [0, 1, 2], [0.9, 0.8, 0.6], [0.5, 0.6, 0.9], 0.9)
    plots.importance_vs_iou(p("iou.png"), [{"classes": 1, "units": 4, "mean_iou": 0.1,
                                            "stderr": 0.01, "at_least": False}], 5)
    curve = {"n_units": [0, 1, 2], "removed_fraction": [0, 0.3, 0.5],
             "ci99_low": [0, 0.1, 0.3], "ci99_high": [0, 0.4, 0.6]}
    plots.removal_curve(p("removal.png"), "tree", curve)
    ins = {"contexts": [{"name": "sky", "category": "object", "mean_added": 0.01,
                         "stderr": 0.001}], "per_location_mean_added": rng.random((4, 4))}
    plots.insertion_contexts(p("ctx.png"), "door", ins)
    plots.insertion_map(p("map.png"), "door", ins)
    plots.unit_ablation_heatmap(p("heat.png"), rng.normal(size=(5, 4)), ["-", "a", "b", "c"],
                                [0, 0.2, 0.3, 0.5])
    applications.unit_shift_plot(p("shift.png"), rng.normal(size=6), [0, 1], [2, 3])
    applications.importance_scatter(p("scatter.png"), rng.normal(size=6), np.arange(6), "a")
    assert len(figs) == 10
    for name, fig in figs:
        main_axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        for ax in main_axes:
            assert ax.get_title(), f"{name}: an axes without a title"
            assert ax.get_xlabel() and ax.get_ylabel(), f"{name}: an unlabelled axis"
