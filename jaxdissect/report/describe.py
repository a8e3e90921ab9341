"""The open-vocabulary report: ``describe.json`` and ``describe.html``, one card per
unit with its top probe images, its open-vocabulary label (with the next concepts
and their scores) and, where the same units were dissected with masks, the
dissection label and IoU beside it (``templates/report/describe.html``)."""

from __future__ import annotations

import json
import os

from jaxdissect.report.html import render


def _options(options: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                     for k, v in options.items())


def write_describe(outdir: str, summary: dict, index_link: str | None = None) -> str:
    """Writes ``describe.json`` (``summary``) and ``describe.html``; returns the html
    path. ``summary``: model, layer, data, imagetext, method, concepts, units (records
    of ``DescribeResult.units`` with optional image, dissect_label, dissect_iou,
    agree) and an optional ``comparison`` (``experiments.describe.compare``);
    ``index_link``: a page to link back to (relative)."""
    from jaxdissect.runtime.cache import atomic_write
    os.makedirs(outdir, exist_ok=True)
    text = json.dumps(summary, indent=1)
    atomic_write(os.path.join(outdir, "describe.json"), lambda f: f.write(text.encode()))
    page = render("report/describe.html", s=summary, cmp=summary.get("comparison"),
                  options=_options(summary.get("options", {})), index_link=index_link)
    path = os.path.join(outdir, "describe.html")
    atomic_write(path, lambda f: f.write(page.encode()))
    return path
