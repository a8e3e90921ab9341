"""HTML pages: the dissection report (unit cards), experiment pages, the index.

``report.html`` holds one card per unit: its top images (a PNG strip with the
above-threshold region highlighted), unit number, label, category and IoU, and,
when the labels were tested (``experiments.significance``), the label's
permutation p-value and the IoU's bootstrap interval: the card of
``templates/cards.html``, the same as the app's (the units are also embedded as
JSON). Sorting and filtering by category and IoU work from the controls and from
the URL hash, e.g.
``report.html#cat=object&miniou=0.1&sort=iou`` (so a link, or a headless browser,
can open a filtered view). Pages are self-contained apart from their image files.

Every page is a Jinja2 template under ``jaxdissect/templates/report/`` (the folder
the app's pages live in too, all extending ``layout.html``), rendered with
autoescape: values are escaped unless they are HTML by contract (a finding's
sentence, a figure's caption, the index's notes).
"""

from __future__ import annotations

import functools
import os

#: the one templates folder: the static report's pages (``report/``) and the app's
#: (``app/``), both extending ``layout.html``
TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "templates")


@functools.lru_cache(maxsize=1)
def _environment():
    import jinja2
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render(template: str, **context) -> str:
    """The page ``template`` (a path under ``TEMPLATES``) rendered with ``context``;
    every value is escaped unless the template marks it as HTML."""
    return _environment().get_template(template).render(**context)


def skipped_note(n: int) -> str:
    """`` (N unreadable images skipped)`` when a folder's bad images were left out."""
    return f" ({n} unreadable image{'s' * (n != 1)} skipped)" if n else ""


def dissection_page(result: dict, svg_name: str | None = "concepts.svg",
                    index_link: str | None = None) -> str:
    """``report.html`` from a dissection result (see ``jaxdissect.report.write``)."""
    units = card_units(result["units"])
    sig = result.get("significance")
    if sig:
        sig = dict(sig, fdr=f"{sig['fdr']:.0%}", level=f"{sig['level']:.0%}",
                   max_p=None if sig.get("max_p") is None else f"{sig['max_p']:g}")
    data = {"units": [{k: u.get(k) for k in ("unit", "label", "category", "iou", "labelled",
                                             "fires", "image", "p_value", "iou_low",
                                             "iou_high", "null_iou")} for u in units]}
    return render(
        "report/dissection.html", name=f"{result.get('model', 'model')} {result['layer']}",
        index_link=index_link, units=units, labelled=sum(u["labelled"] for u in units),
        silent=sum(not u["fires"] for u in units), miniou=result["miniou"],
        quantile=f"{result['quantile']:g}", num_images=result.get("num_images", "?"),
        skipped=skipped_note(result.get("skipped_images", 0)),
        segmenter=str(result.get("segmenter", "")), sig=sig, svg_name=svg_name, data=data)


def card_units(units: list[dict]) -> list[dict]:
    """A dissection's unit records as their cards show them (``templates/cards.html``):
    a unit that never fires is not labelled and has no strip; ``sig``: the label's
    p-value, IoU interval and chance level where it was tested."""
    out = []
    for u in units:
        u = dict(u, fires=u.get("fires", True))
        if not u["fires"]:
            u["labelled"], u["image"] = False, None
        u["sig"] = _sig_text(u)
        out.append(u)
    return out


def _sig_text(u: dict) -> str:
    p = u.get("p_value")
    if p is None:
        return ""
    if p < 0.001:
        mantissa, exponent = f"{p:.1e}".split("e")
        text = f"p {mantissa}e{int(exponent)}"
    else:
        text = f"p {p:.3f}"
    if u.get("iou_low") is not None:
        text += f", IoU {u['iou_low']:.3f}-{u['iou_high']:.3f}"
    if u.get("null_iou") is not None:
        text += f", chance {u['null_iou']:.3f}"
    return text


def findings_context(findings) -> list[dict]:
    """The findings of a typed result (``significance.Finding``) as the pages show them:
    the sentence (HTML) and whether it holds (None: unmarked, as one that does not
    apply)."""
    return [{"sentence": f.sentence(), "holds": f.holds if f.applies else None}
            for f in findings]


def plot_records(figs, folder: str | None = None) -> list[dict]:
    """One record per plot image file; with the ``folder`` holding them, each states
    the file's size in pixels (``width``, ``height``)."""
    def record(f):
        if folder is None:
            return {"src": f, "width": None, "height": None}
        from PIL import Image
        with Image.open(os.path.join(folder, f)) as im:
            return {"src": f, "width": im.width, "height": im.height}
    return [record(f) for f in figs]


def write_text(path: str, text: str) -> str:
    """Writes ``text`` to ``path`` atomically (``runtime.cache.write_text``)."""
    from jaxdissect.runtime.cache import write_text as atomic_text
    return atomic_text(path, text)
