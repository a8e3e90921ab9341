"""Reports: dissection unit cards, experiment pages with plots, and an index.

Result dicts in, files out:

* ``write_dissection(dir, result)`` -> ``report.html``, ``concepts.svg``, ``report.json``;
  ``result`` has ``layer``, ``quantile``, ``miniou``, ``units`` (one dict per unit:
  ``unit``, ``label``, ``category``, ``iou``, ``labelled``, ``image`` = relative PNG path
  of its thumbnail strip or None), and optional ``model``, ``num_images``, ``segmenter``.
* ``write_ablation(dir, result, class_names, unit_labels)`` -> ``ablation.html``, plots,
  ``ablation.json`` (``result`` from ``jaxdissect.experiments.ablate.run_experiment``).
* ``write_intervention(dir, result)`` -> ``intervention.html``, plots,
  ``intervention.json`` (``result`` from ``jaxdissect.experiments.intervene.run_experiment``).
* ``write_index(dir, parts)`` -> ``index.html`` linking every part.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from jaxdissect.report import plots
from jaxdissect.report.html import (
    back_link_html,
    dissection_page,
    finding_html,
    page,
    plots_html,
    table_html,
    write_text,
)
from jaxdissect.report.svg import concept_bargraph
from jaxdissect.report.thumbs import unit_strip

__all__ = ["write_dissection", "write_ablation", "write_intervention", "write_index",
           "write_unit_thumbnails", "concept_bargraph", "dump_json"]


def _clean(x):
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(x) or math.isinf(x) else float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def dump_json(path: str, obj) -> str:
    """JSON with NaN/inf as null and NumPy types converted; atomic."""
    return write_text(path, json.dumps(_clean(obj), indent=1))


def write_unit_thumbnails(outdir: str, strips: dict[int, tuple[np.ndarray, np.ndarray]],
                          subdir: str = "units") -> dict[int, str]:
    """Save ``{unit: (images [k,H,W,3], masks [k,H,W])}`` as PNG strips; returns
    ``{unit: relative path}``."""
    os.makedirs(os.path.join(outdir, subdir), exist_ok=True)
    paths = {}
    for u, (imgs, masks) in strips.items():
        rel = f"{subdir}/unit_{u:04d}.png"
        unit_strip(imgs, masks).save(os.path.join(outdir, rel))
        paths[u] = rel
    return paths


def write_dissection(outdir: str, result: dict, index_link: str | None = None) -> str:
    os.makedirs(outdir, exist_ok=True)
    labelled = [(u["label"], u["category"]) for u in result["units"] if u["labelled"]]
    write_text(os.path.join(outdir, "concepts.svg"), concept_bargraph(
        labelled, title=f"{len(labelled)} labelled units of {result['layer']}"))
    dump_json(os.path.join(outdir, "report.json"), result)
    return write_text(os.path.join(outdir, "report.html"),
                      dissection_page(result, "concepts.svg", index_link))


def _pct(v):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def ablation_findings(result: dict) -> list[tuple[str, bool]]:
    s = result["summary"]
    k = s["k"]
    return [
        (f"Removing each class's {k} most important units (ranked on train) lowers mean "
         f"balanced accuracy on val from {_pct(s['mean_baseline_ba'])} to "
         f"{_pct(s['mean_removed_ba'])}: {s['fraction_of_way_to_chance']:.0%} of the way to "
         f"chance (50%). Paper: 76.6% to 53.0% for VGG-16 on Places365; criterion: at least "
         f"halfway. " + (f"The smallest set size measured that gets halfway is k = "
                         f"{s['k_halfway_to_chance']}." if s.get("k_halfway_to_chance")
                         else "No measured set size gets halfway."),
         s["removal_moves_halfway_to_chance"]),
        (f"Keeping only those {k} units (all {result['num_units'] - k} others removed) gives "
         f"{_pct(s['mean_kept_ba'])}, {s['kept_fraction_of_baseline']:.0%} of the baseline. "
         f"Paper: 73.0%; criterion: at least 80% of baseline.", s["keeping_retains_80pct"]),
    ]


def write_ablation(outdir: str, result: dict, class_names, unit_labels=None,
                   index_link: str | None = None) -> str:
    """``unit_labels[u]`` = (label, category, iou) from dissection, for the tables."""
    os.makedirs(outdir, exist_ok=True)
    dump_json(os.path.join(outdir, "ablation.json"), result)
    s = result["summary"]
    ks = result["ks"]
    i = ks.index(s["k"])
    base = np.array(result["baseline_val"]["balanced_accuracy"], float)
    rm = np.array(result["removed_top_k_ba"], float)
    kp = np.array(result["kept_top_k_ba"], float)
    figs = [plots.ablation_classes(os.path.join(outdir, "ablation_classes.png"), class_names,
                                   base, rm[:, i], kp[:, i], s["k"]),
            plots.ablation_k(os.path.join(outdir, "ablation_k.png"), ks, rm, kp, base)]
    if "importance_vs_iou" in result:
        figs.append(plots.importance_vs_iou(os.path.join(outdir, "importance_vs_iou.png"),
                                            result["importance_vs_iou"]["rows"],
                                            result["importance_vs_iou"]["cutoff"]))
    for c, cv in result["curves"].items():
        figs.append(plots.ablation_curve(os.path.join(outdir, f"curve_{c}.png"),
                                         class_names[int(c)], cv["k"], cv["removed"],
                                         cv["kept"], base[int(c)]))

    def ulabel(u):
        if unit_labels is None:
            return f"{u}"
        lab, cat, iou = unit_labels[u]
        return f"{u} {lab} ({iou:.2f})"

    rows = []
    bt = result["baseline_val"]
    for c, name in enumerate(class_names):
        rows.append([name, _pct(bt["precision"][c]), _pct(bt["recall"][c]), _pct(base[c]),
                     _pct(rm[c, i]), _pct(kp[c, i]),
                     ", ".join(ulabel(u) for u in result["ranking"][c][:4])])
    body = ["<h1>Classifier unit ablation</h1>"]
    body += back_link_html(index_link)
    body.append("<h2>Findings</h2>")
    body += [finding_html(t, ok) for t, ok in ablation_findings(result)]
    body.append("<h2>Plots</h2>")
    body += plots_html(figs)
    body.append(f"<h2>Per class (val; set size k={s['k']})</h2>")
    body.append(table_html(["class", "precision", "recall", "balanced acc.",
                            f"top {s['k']} removed", f"only top {s['k']} kept",
                            "most important units (train)"], rows))
    return write_text(os.path.join(outdir, "ablation.html"), page("ablation", "\n".join(body)))


def intervention_findings(result: dict, min_removed: float = 0.5) -> list[tuple[str, bool]]:
    out = []
    for concept, cv in result["removal"].items():
        n = cv["n_units"][-1]
        f = cv["removed_fraction"][-1]
        best = int(np.nanargmax(cv["removed_fraction"]))
        fb = cv["removed_fraction"][best]
        out.append((f"Zeroing the {n} best-IoU units of <b>{concept}</b> removes {f:.0%} "
                    f"(99% CI {cv['ci99_low'][-1]:.0%} to {cv['ci99_high'][-1]:.0%}) of its "
                    f"pixels (baseline share {cv['baseline_share']:.1%}); the most removed is "
                    f"{fb:.0%} (99% CI {cv['ci99_low'][best]:.0%} to "
                    f"{cv['ci99_high'][best]:.0%}) with its {cv['n_units'][best]} best units. "
                    f"Paper: 55% of trees with 30 units; criterion: at least "
                    f"{min_removed:.0%} (best n).", fb >= min_removed))
    for concept, ins in result["insertion"].items():
        d = ins.get("differs_by_context")
        if not d:
            continue
        by_name = {r["name"]: r for r in ins["contexts"]}
        hi, lo = by_name[d["highest"]], by_name[d["lowest"]]
        out.append((f"Inserting <b>{concept}</b> units at one location adds "
                    f"{hi['mean_added']:.2%} of the image as {concept} where the context is "
                    f"{hi['name']} but {lo['mean_added']:.2%} where it is {lo['name']} "
                    f"(difference {d['z']:.1f} standard errors): the effect depends on context, "
                    f"as the paper found for doors (windows/buildings vs sky/trees).",
                    d["significant_99"]))
    return out


def write_intervention(outdir: str, result: dict, index_link: str | None = None) -> str:
    os.makedirs(outdir, exist_ok=True)
    dump_json(os.path.join(outdir, "intervention.json"), result)
    names = result["labels"]["names"]
    figs = [plots.unit_ablation_heatmap(os.path.join(outdir, "unit_ablation.png"),
                                        result["unit_ablation_delta"], names,
                                        result["baseline_share"])]
    for concept, cv in result["removal"].items():
        figs.append(plots.removal_curve(os.path.join(outdir, f"removal_{concept}.png"),
                                        concept, cv))
    for concept, ins in result["insertion"].items():
        figs.append(plots.insertion_contexts(os.path.join(outdir, f"insertion_{concept}.png"),
                                             concept, ins))
        figs.append(plots.insertion_map(os.path.join(outdir, f"insertion_map_{concept}.png"),
                                        concept, ins))
    body = ["<h1>Generator interventions</h1>"]
    body += back_link_html(index_link)
    body.append("<h2>Findings</h2>")
    body += [finding_html(t, ok) for t, ok in intervention_findings(result)]
    body.append("<h2>Plots</h2>")
    body += plots_html(figs)
    for concept, ins in result["insertion"].items():
        body.append(f"<h2>Insertion of {concept} by context</h2>")
        body.append(table_html(["context label", "category", "edits", "mean share added",
                                "std. error"],
                               [[r["name"], r["category"], r["count"], f"{r['mean_added']:.4f}",
                                 f"{r['stderr']:.4f}"] for r in ins["contexts"]]))
    return write_text(os.path.join(outdir, "intervention.html"),
                      page("intervention", "\n".join(body)))


def write_index(outdir: str, parts: list[dict], title: str = "jaxdissect results",
                findings: list[tuple[str, bool]] = (), notes: str = "") -> str:
    """``parts``: ``[{"title", "href" (relative), "text"}]``."""
    body = [f"<h1>{title}</h1>"]
    if notes:
        body.append(f"<p>{notes}</p>")
    if findings:
        body.append("<h2>The paper's findings, measured here</h2>")
        body += [finding_html(t, ok) for t, ok in findings]
    body.append("<h2>Parts</h2><ul>")
    body += [f"<li><a href=\"{p['href']}\">{p['title']}</a> &mdash; {p.get('text', '')}</li>"
             for p in parts]
    body.append("</ul>")
    return write_text(os.path.join(outdir, "index.html"), page(title, "\n".join(body)))
