"""The open-vocabulary report: ``describe.json`` and ``describe.html``, one card per
unit with its top probe images, its open-vocabulary label (with the next concepts
and their scores) and, where the same units were dissected with masks, the
dissection label and IoU beside it."""

from __future__ import annotations

import html
import json
import os

from jaxdissect.report.html import STYLE

_EXTRA = """
.card.agree{border-color:#55B05B;border-width:2px} .card .open{font-weight:bold}
.card .next{color:#666;font-size:12px} .card .mask{color:#335;font-size:13px}
"""


def _options(options: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                     for k, v in options.items())


def _card(rec: dict) -> str:
    e = html.escape
    img = (f'<img src="{e(rec["image"])}" alt="top images of unit {rec["unit"]}">'
           if rec.get("image") else "")
    nxt = ", ".join(f'{e(n["concept"])} {n["score"]:.1f}' for n in rec["next"])
    mask = ""
    if "dissect_label" in rec:
        lab = rec["dissect_label"]
        mask = (f'<div class="mask">masks: {e(lab)} (IoU {rec["dissect_iou"]:.3f})</div>'
                if lab is not None else '<div class="mask">masks: no label</div>')
    agree = " agree" if rec.get("agree") else ""
    return (f'<div class="card{agree}"><div class="info">unit {rec["unit"]}: '
            f'<span class="open">{e(rec["label"])}</span> ({rec["score"]:.1f})'
            f'<div class="next">then {nxt}</div>{mask}</div>{img}</div>')


def write_describe(outdir: str, summary: dict) -> str:
    """Writes ``describe.json`` (``summary``) and ``describe.html``; returns the html
    path. ``summary``: model, layer, data, imagetext, method, concepts, units (records
    of ``DescribeResult.units`` with optional image, dissect_label, dissect_iou,
    agree) and an optional ``comparison`` (``experiments.describe.compare``)."""
    from jaxdissect.runtime.cache import atomic_write
    os.makedirs(outdir, exist_ok=True)
    text = json.dumps(summary, indent=1)
    atomic_write(os.path.join(outdir, "describe.json"), lambda f: f.write(text.encode()))
    e = html.escape
    head = (f'{e(summary["model"])} {e(summary["layer"])}: {len(summary["units"])} units '
            f'described with {len(summary["concepts"])} concepts by {e(summary["imagetext"])} '
            f'({e(summary["method"])}: {e(_options(summary.get("options", {})))}; '
            f'{summary["num_images"]} probe images of '
            f'{e(summary["data"])})')
    cmp = summary.get("comparison")
    lines = [f"<p>{head}</p>"]
    if cmp:
        lines.append(f'<p>Open-vocabulary label equal to the mask-based dissection label on '
                     f'{cmp["agree"]} of the {cmp["labelled"]} units dissection labels '
                     f'({100 * cmp["rate"]:.1f}%), among its {cmp["near"]} highest-IoU '
                     f'concepts on {cmp["near_agree"]}; a distractor word (a concept the data '
                     f'never shows) labels {cmp["distractor_wins"]} of {cmp["units"]} units. '
                     f'Green cards agree. The mask-based report: '
                     f'<a href="dissect/report.html">dissect/report.html</a>.</p>')
    cards = "\n".join(_card(r) for r in summary["units"])
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>open-vocabulary '
            f'labels: {e(summary["layer"])}</title><style>{STYLE}{_EXTRA}</style></head>'
            f'<body><h1>Open-vocabulary labels</h1>{"".join(lines)}'
            f'<div class="cards">{cards}</div></body></html>\n')
    path = os.path.join(outdir, "describe.html")
    atomic_write(path, lambda f: f.write(page.encode()))
    return path
