"""Reports: dissection unit cards, experiment pages with plots, and an index.

Results in, files out:

* ``write_dissection(dir, result)`` -> ``report.html``, ``concepts.svg``, ``report.json``;
  ``result`` has ``layer``, ``quantile``, ``miniou``, ``units`` (one dict per unit:
  ``unit``, ``label``, ``category``, ``iou``, ``labelled``, ``image`` = relative PNG path
  of its thumbnail strip or None), and optional ``model``, ``num_images``, ``segmenter``.
* ``write_ablation(dir, result, unit_labels)`` -> ``ablation.html``, plots,
  ``ablation.json``, ``ablation.npz`` (``result`` an ``experiments.ablate.AblationResult``).
* ``write_intervention(dir, result)`` -> ``intervention.html``, plots,
  ``intervention.json``, ``intervention.npz`` (an ``experiments.intervene.InterventionResult``).

The experiments decide their findings (``result.findings()``); pages only render them.
* ``write_index(dir, parts)`` -> ``index.html`` linking every part.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from jaxdissect.report import pictures as P
from jaxdissect.report import plots
from jaxdissect.report.html import (
    dissection_page,
    findings_context,
    plot_records,
    render,
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
    """Save ``{unit: (images [k,H,W,3], masks [k,H,W])}`` as PNG strips (atomically;
    strips of units a previous run wrote and this one does not are removed, so the
    folder holds one run's strips); returns ``{unit: relative path}``."""
    from jaxdissect.runtime.cache import atomic_write
    folder = os.path.join(outdir, subdir)
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for u, (imgs, masks) in strips.items():
        rel = f"{subdir}/unit_{u:04d}.png"
        strip = unit_strip(imgs, masks)
        atomic_write(os.path.join(outdir, rel), lambda f, s=strip: s.save(f, format="PNG"))
        paths[u] = rel
    keep = {os.path.basename(r) for r in paths.values()}
    for name in os.listdir(folder):
        if name.startswith("unit_") and name.endswith(".png") and name not in keep:
            os.unlink(os.path.join(folder, name))
    return paths


def write_dissection(outdir: str, result: dict, index_link: str | None = None) -> str:
    os.makedirs(outdir, exist_ok=True)
    labelled = [(u["label"], u["category"]) for u in result["units"]
                if u["labelled"] and u.get("fires", True)]
    name = f"{result.get('model', 'model')} {result['layer']}"
    write_text(os.path.join(outdir, "concepts.svg"), concept_bargraph(
        labelled, title=f"Labelled units per concept: {name} ({len(labelled)} of "
                        f"{len(result['units'])} units)"))
    dump_json(os.path.join(outdir, "report.json"), result)
    return write_text(os.path.join(outdir, "report.html"),
                      dissection_page(result, "concepts.svg", index_link))


def _pct(v):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def write_ablation(outdir: str, result, unit_labels=None,
                   index_link: str | None = None) -> str:
    """``ablation.html``, plots, ``ablation.json`` and ``ablation.npz`` from an
    ``experiments.ablate.AblationResult``; ``unit_labels[u]`` = (label, category,
    iou) from dissection, for the tables."""
    os.makedirs(outdir, exist_ok=True)
    dump_json(os.path.join(outdir, "ablation.json"), result.to_json())
    result.save(os.path.join(outdir, "ablation.npz"))
    s = result.summary()
    ks = list(result.ks)
    i = ks.index(s["k"])
    class_names = list(result.class_names)
    base = result.baseline_val.balanced_accuracy
    rm, kp = result.removed_top_k_ba, result.kept_top_k_ba
    figs = [plots.ablation_classes(os.path.join(outdir, "ablation_classes.png"), class_names,
                                   base, rm[:, i], kp[:, i], s["k"]),
            plots.ablation_k(os.path.join(outdir, "ablation_k.png"), ks, rm, kp, base)]
    iv = result.importance_vs_iou()
    if iv is not None:
        figs.append(plots.importance_vs_iou(os.path.join(outdir, "importance_vs_iou.png"),
                                            iv["rows"], iv["cutoff"]))
    for c, cv in result.curves.items():
        figs.append(plots.ablation_curve(os.path.join(outdir, f"curve_{c}.png"),
                                         class_names[int(c)], cv.k, cv.removed, cv.kept,
                                         base[int(c)]))

    def ulabel(u):
        if unit_labels is None:
            return f"{u}"
        lab, cat, iou = unit_labels[u]
        return f"{u} {lab} ({iou:.2f})"

    rows = []
    bt = result.baseline_val
    counts = result.val_class_counts
    for c, name in enumerate(class_names):
        rows.append([name, int(counts[c]), _pct(float(bt.precision[c])),
                     _pct(float(bt.recall[c])), _pct(float(base[c])), _pct(float(rm[c, i])),
                     _pct(float(kp[c, i])),
                     ", ".join(ulabel(int(u)) for u in result.ranking[c][:4])])
    header = ["class", "val images", "precision", "recall", "balanced acc.",
              f"top {s['k']} removed", f"only top {s['k']} kept", "most important units (train)"]
    return write_text(os.path.join(outdir, "ablation.html"), render(
        "report/ablation.html", index_link=index_link, train_examples=result.train_examples,
        val_examples=result.val_examples, replicates=len(result.bootstrap),
        findings=findings_context(result.findings()), figs=plot_records(figs, outdir),
        k=s["k"], header=header, rows=rows))


def write_intervention(outdir: str, result, index_link: str | None = None,
                       pictures: list[dict] | None = None) -> str:
    """``intervention.html``, plots, ``intervention.json`` and ``intervention.npz``
    from an ``experiments.intervene.InterventionResult``; ``pictures``: records of the
    removal strips and insertion grids (``report.pictures``) already written under
    ``outdir``, listed in ``pictures.json`` (None: the ones that file lists)."""
    os.makedirs(outdir, exist_ok=True)
    if pictures is None:
        pictures = P.load_records(outdir)
    else:
        P.save_records(outdir, pictures)
    data = result.to_json()
    dump_json(os.path.join(outdir, "intervention.json"), data)
    result.save(os.path.join(outdir, "intervention.npz"))
    names = list(result.labels.names)
    figs = [plots.unit_ablation_heatmap(os.path.join(outdir, "unit_ablation.png"),
                                        result.unit_ablation_delta, names,
                                        result.baseline_share)]
    for concept, cv in data["removal"].items():
        figs.append(plots.removal_curve(os.path.join(outdir, f"removal_{concept}.png"),
                                        concept, cv))
    for concept, ins in data["insertion"].items():
        figs.append(plots.insertion_contexts(os.path.join(outdir, f"insertion_{concept}.png"),
                                             concept, ins))
        figs.append(plots.insertion_map(os.path.join(outdir, f"insertion_map_{concept}.png"),
                                        concept, ins))
    sizes = [f"per-unit ablation {result.unit_ablation_samples} samples"]
    sizes += [f"removal of {c} {cv.samples}" for c, cv in result.removal.items()]
    sizes += [f"insertion of {c} {ins.samples}" for c, ins in result.insertion.items()]
    tables = [(concept, ["context label", "category", "edits", "mean share added", "std. error"],
               [[r["name"], r["category"], r["count"], f"{r['mean_added']:.4f}",
                 f"{r['stderr']:.4f}"] for r in ins["contexts"]])
              for concept, ins in data["insertion"].items()]
    return write_text(os.path.join(outdir, "intervention.html"), render(
        "report/intervention.html", index_link=index_link, sizes=sizes,
        findings=findings_context(result.findings()),
        pictures=[(pic, P.caption(pic)) for pic in pictures or ()],
        figs=plot_records(figs, outdir), insertion_tables=tables))


def write_index(outdir: str, parts: list[dict], title: str = "jaxdissect results",
                findings=(), notes: str = "", figures=(), sections=()) -> str:
    """``parts``: ``[{"title", "href" (relative), "text"}]``; ``findings``: the typed
    results' ``significance.Finding`` list; ``figures``: picture records (``src``
    relative to ``outdir``, ``width``, ``height``, ``caption`` HTML), shown first;
    ``notes``: a paragraph (HTML); ``sections``: after the findings, ``[{"title",
    "lines" (paragraphs of text), "header", "rows" (a table), "href", "link"}]``."""
    return write_text(os.path.join(outdir, "index.html"), render(
        "report/index.html", title=title, figures=list(figures), notes=notes,
        findings=findings_context(findings), parts=parts, sections=list(sections)))
