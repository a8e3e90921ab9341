"""One HTML stack: the static report and the app render from one templates folder, with
one layout and one unit card, and escape what they are given."""

import json
import os
import re

from jaxdissect import report
from jaxdissect.app import create_app
from jaxdissect.report.html import TEMPLATES
from tests.support.app import fake_results

HOSTILE = '<script>alert("x")</script>'


def _cards(page: str) -> dict[int, str]:
    """``{unit: the card's info markup}`` of a page."""
    found = re.findall(r'<(?:a|div) class="card[^"]*"[^>]* data-unit="(\d+)"[^>]*>\s*'
                       r'(<div class="info">.*?</div>)\s*(?:<img|</a>|</div>)', page, re.S)
    return {int(u): re.sub(r"\s+", " ", info) for u, info in found}


def test_report_and_app_share_templates_cards_and_escaping(tmp_path):
    folder = fake_results(str(tmp_path))
    with open(os.path.join(folder, "report.json")) as f:
        summary = json.load(f)
    summary["units"][1].update(label=HOSTILE, labelled=True, p_value=0.0004, iou_low=0.01,
                               iou_high=0.2, null_iou=0.003)
    summary["model"] = HOSTILE
    for rec in summary["units"]:
        rec["fires"] = rec["threshold"] > 0          # as a dissection records it
    page = open(report.write_dissection(folder, summary)).read()   # report.json too
    app = create_app(str(tmp_path))
    assert app.jinja_loader.searchpath == [TEMPLATES]
    served = app.test_client().get("/units/0").get_data(as_text=True)
    for text in (page, served):
        assert HOSTILE not in text and "&lt;script&gt;" in text
        assert text.startswith('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">')
    static, live = _cards(page), _cards(served)
    assert sorted(static) == sorted(live) == list(range(len(summary["units"])))
    for u, rec in enumerate(summary["units"]):
        if rec["labelled"] or not rec["fires"]:      # unlabelled: the app says so
            assert static[u] == live[u], u
    assert '<div class="sig">p 4.0e-4, IoU 0.010-0.200, chance 0.003</div>' in static[1]
    assert "never fires" in static[5] and 'data-fires="0"' in page
    assert 'href="/unit/0/1"' in served and 'src="/files/gen/dissect/' not in served
