"""The report pages read naturally: silent units shown as such, a concept chart that
grows with the concepts (labels never overlap), titles without repeated words."""

from __future__ import annotations

import json
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
