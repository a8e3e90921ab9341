"""HTML pages: the dissection report (unit cards), experiment pages, the index.

``report.html`` holds one card per unit: its top images (a PNG strip with the
above-threshold region highlighted), unit number, label, category and IoU, and,
when the labels were tested (``experiments.significance``), the label's
permutation p-value and the IoU's bootstrap interval. Cards
are rendered in the browser from the JSON embedded in the page; sorting and
filtering by category and IoU work from the controls and from the URL hash, e.g.
``report.html#cat=object&miniou=0.1&sort=iou`` (so a link, or a headless browser,
can open a filtered view). Pages are self-contained apart from their image files.
"""

from __future__ import annotations

import html
import json
import os

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em}
.controls{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd}
.controls label{margin-right:1em}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:1em}
.card{border:1px solid #ccc;border-radius:6px;padding:6px;width:fit-content}
.card .info{font-size:13px;margin-bottom:4px}
.card .label{font-weight:bold} .card .cat{color:#666}
.card.unlabelled .label{color:#999;font-weight:normal}
.card.silent{background:#f4f4f4} .silent-mark{color:#a33;font-style:italic}
.card img{display:block;image-rendering:pixelated}
.card .sig{color:#555;font-size:12px}
table{border-collapse:collapse;font-size:14px} td,th{border:1px solid #ddd;padding:3px 8px}
.finding{padding:.4em .8em;margin:.4em 0;border-left:4px solid #55B05B;background:#f4fbf4}
.finding.no{border-left-color:#D92E2B;background:#fbf4f4}
img.plot{max-width:100%;height:auto;border:1px solid #eee}
figure{margin:1em 0} figcaption{font-size:14px;max-width:900px;margin-top:.3em}
img.pic{display:block;max-width:none}
"""

SCRIPT = r"""
(function(){
  const data = JSON.parse(document.getElementById('report-data').textContent);
  const cards = document.getElementById('cards');
  const catSel = document.getElementById('cat'), iouIn = document.getElementById('miniou');
  const sortSel = document.getElementById('sort'), shown = document.getElementById('shown');
  const cats = [...new Set(data.units.map(u => u.category).filter(c => c))].sort();
  for (const c of cats) { const o = document.createElement('option'); o.value = c;
    o.textContent = c; catSel.appendChild(o); }
  function readHash(){
    const p = new URLSearchParams(location.hash.slice(1) || location.search.slice(1));
    if (p.has('cat')) catSel.value = p.get('cat');
    if (p.has('miniou')) iouIn.value = p.get('miniou');
    if (p.has('sort')) sortSel.value = p.get('sort');
  }
  function render(){
    const cat = catSel.value, minIou = parseFloat(iouIn.value) || 0, key = sortSel.value;
    let units = data.units.filter(u => u.fires ? (cat === 'all' || u.category === cat)
      && u.iou >= minIou : cat === 'all' && minIou <= 0);
    const cmp = {   // units that never fire last
      iou: (a, b) => (b.fires - a.fires) || b.iou - a.iou || a.unit - b.unit,
      unit: (a, b) => a.unit - b.unit,
      label: (a, b) => (b.fires - a.fires) || a.label.localeCompare(b.label) || b.iou - a.iou,
      category: (a, b) => (b.fires - a.fires) || a.category.localeCompare(b.category)
        || b.iou - a.iou,
    }[key];
    units.sort(cmp);
    cards.textContent = '';
    for (const u of units) {
      const d = document.createElement('div');
      d.className = 'card' + (u.fires ? (u.labelled ? '' : ' unlabelled') : ' silent');
      d.dataset.unit = u.unit; d.dataset.category = u.fires ? u.category : '';
      d.dataset.iou = u.iou;
      const info = document.createElement('div'); info.className = 'info';
      if (!u.fires) {      // never above its threshold: no concept, no top images
        info.innerHTML = '<span class="unit">unit ' + u.unit + '</span> '
          + '<span class="silent-mark">never fires</span>';
        d.appendChild(info); cards.appendChild(d); continue;
      }
      info.innerHTML = '<span class="unit">unit ' + u.unit + '</span> <span class="label"></span>'
        + ' <span class="cat"></span> <span class="iou">IoU ' + u.iou.toFixed(3) + '</span>';
      if (u.p_value != null) {
        const sig = document.createElement('div'); sig.className = 'sig';
        sig.textContent = 'p ' + (u.p_value < 0.001 ? u.p_value.toExponential(1)
                                                     : u.p_value.toFixed(3))
          + (u.iou_low != null ? ', IoU ' + u.iou_low.toFixed(3) + '-' + u.iou_high.toFixed(3) : '')
          + (u.null_iou != null ? ', chance ' + u.null_iou.toFixed(3) : '');
        info.appendChild(sig);
      }
      info.querySelector('.label').textContent = u.label;
      info.querySelector('.cat').textContent = '(' + u.category + ')';
      d.appendChild(info);
      if (u.image) { const im = document.createElement('img'); im.src = u.image;
        im.alt = 'top images of unit ' + u.unit; d.appendChild(im); }
      cards.appendChild(d);
    }
    shown.textContent = units.length;
    const p = new URLSearchParams({cat: catSel.value, miniou: iouIn.value, sort: sortSel.value});
    history.replaceState(null, '', '#' + p.toString());
  }
  readHash();
  for (const el of [catSel, iouIn, sortSel]) el.addEventListener('input', render);
  window.addEventListener('hashchange', () => { readHash(); render(); });
  render();
})();
"""


def _json_for_script(obj) -> str:
    # keep "</script>" out of the embedded JSON
    return json.dumps(obj).replace("</", "<\\/")


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def skipped_note(n: int) -> str:
    """`` (N unreadable images skipped)`` when a folder's bad images were left out."""
    return f" ({n} unreadable image{'s' * (n != 1)} skipped)" if n else ""


def dissection_page(result: dict, svg_name: str | None = "concepts.svg",
                    index_link: str | None = None) -> str:
    """``report.html`` from a dissection result (see ``jaxdissect.report.write``)."""
    units = [dict(u, fires=u.get("fires", True)) for u in result["units"]]
    for u in units:
        if not u["fires"]:
            u["labelled"], u["image"] = False, None
    labelled = sum(u["labelled"] for u in units)
    silent = sum(not u["fires"] for u in units)
    name = f"{result.get('model', 'model')} {result['layer']}"
    head = [f"<h1>Dissection of {html.escape(name)}</h1>"]
    head += back_link_html(index_link)
    head.append(
        f"<p>{labelled} of {len(units)} units labelled (IoU &gt; {result['miniou']})"
        + (f"; {silent} never fire (never above their threshold: no concept, no top "
           f"images)" if silent else "") + "; "
        f"threshold: top {result['quantile']:g} quantile of each unit's activations over "
        f"{result.get('num_images', '?')} inputs"
        f"{skipped_note(result.get('skipped_images', 0))}; segmenter: "
        f"{html.escape(str(result.get('segmenter', '')))}.</p>")
    sig = result.get("significance")
    if sig:
        head.append(significance_html(sig))
    if svg_name:
        head.append(f"<h2>Labelled units per concept</h2><img class=\"plot\" "
                    f"src=\"{html.escape(svg_name)}\" alt=\"units per concept\">")
    controls = (
        "<h2>Units</h2><div class=\"controls\">"
        "<label>category <select id=\"cat\"><option value=\"all\">all</option></select></label>"
        "<label>min IoU <input id=\"miniou\" type=\"number\" step=\"0.01\" min=\"0\" value=\"0\">"
        "</label><label>sort by <select id=\"sort\"><option value=\"iou\">IoU</option>"
        "<option value=\"unit\">unit</option><option value=\"label\">label</option>"
        "<option value=\"category\">category</option></select></label>"
        "<span><span id=\"shown\">0</span> units shown</span></div>"
        "<div id=\"cards\" class=\"cards\"></div>")
    data = {"units": [{k: u.get(k) for k in ("unit", "label", "category", "iou", "labelled",
                                             "fires", "image", "p_value", "iou_low",
                                             "iou_high", "null_iou")} for u in units]}
    body = "\n".join(head) + controls + (
        f"<script type=\"application/json\" id=\"report-data\">{_json_for_script(data)}"
        f"</script><script>{SCRIPT}</script>")
    return page(f"{name}: dissection", body)


def significance_html(sig: dict) -> str:
    """One paragraph on the labels' significance test (``sig``: ``tested``,
    ``permutations``, ``level``, ``fdr``, ``discoveries``, optional ``max_p``)."""
    text = (f"<p>Significance: each labelled unit's IoU with its label against "
            f"{sig['permutations']} image permutations (its maps paired with other "
            f"images' segmentations); {sig['discoveries']} of {sig['tested']} labels "
            f"survive a {sig['fdr']:.0%} false-discovery rate (Benjamini-Hochberg). "
            f"Intervals: {sig['level']:.0%} bootstrap over images.")
    if sig.get("max_p") is not None:
        text += f" Labels with p &gt; {sig['max_p']:g} are dropped."
    return text + "</p>"


def back_link_html(index_link: str | None) -> list[str]:
    """The "all results" link at the top of a page, or nothing without an index."""
    if not index_link:
        return []
    return [f"<p><a href=\"{html.escape(index_link)}\">&larr; all results</a></p>"]


def plots_html(figs, folder: str | None = None) -> list[str]:
    """One paragraph per plot image file; with the ``folder`` holding them, each
    ``<img>`` states the file's size in pixels (``width``, ``height``)."""
    def size(f):
        if folder is None:
            return ""
        from PIL import Image
        with Image.open(os.path.join(folder, f)) as im:
            return f" width=\"{im.width}\" height=\"{im.height}\""
    return [f"<p><img class=\"plot\" src=\"{f}\"{size(f)} alt=\"{f}\"></p>" for f in figs]


def finding_html(text: str, holds: bool | None) -> str:
    cls = "finding" if holds or holds is None else "finding no"
    mark = "" if holds is None else ("&#10004; " if holds else "&#10008; ")
    return f"<div class=\"{cls}\">{mark}{text}</div>"


def table_html(header, rows) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                  for r in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


def write_text(path: str, text: str) -> str:
    """Writes ``text`` to ``path`` atomically (``runtime.cache.write_text``)."""
    from jaxdissect.runtime.cache import write_text as atomic_text
    return atomic_text(path, text)
