"""Pages, figures and image grids of the paper's applications: the adversarial
attack seen through units (``attack.html``) and painting with units
(``paint.html``)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from jaxdissect.report import dump_json, plots
from jaxdissect.report.html import findings_context, plot_records, render, write_text
from jaxdissect.report.pictures import to_u8


def image_grid(rows, path: str, size: int = 96, gap: int = 2) -> str:
    """Save ``rows [r][c]`` of ``[H, W, 3]`` images in [0, 1] as one PNG grid of
    ``size``-pixel tiles. Returns the file name."""
    n_r, n_c = len(rows), max(len(r) for r in rows)
    grid = Image.new("RGB", (n_c * (size + gap) - gap, n_r * (size + gap) - gap),
                     (255, 255, 255))
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            img = np.asarray(img)
            tile = Image.fromarray(to_u8(img)).resize(
                (size, size), Image.NEAREST if img.shape[0] < size else Image.BILINEAR)
            grid.paste(tile, (j * (size + gap), i * (size + gap)))
    from jaxdissect.runtime.cache import atomic_write
    atomic_write(path, lambda f: grid.save(f, format="PNG"))
    return os.path.basename(path)


def _unit_name(u: int, labels) -> str:
    lab = labels[u] if labels is not None else None
    return f"{u} {lab}" if lab else str(u)


def unit_shift_plot(path: str, delta, moved_up, moved_down, labels=None, top: int = 10) -> str:
    """Left: every unit's change in mean activation, sorted. Right: the ``top`` units
    lowered most and raised most, named (unit number and dissection label)."""
    plt = plots._plt()
    d = np.asarray(delta, float)
    order = np.argsort(d)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    ax.bar(np.arange(d.size), d[order], color=np.where(d[order] < 0, plots.BLUE, plots.ORANGE),
           width=1.0)
    ax.axhline(0, color="#888", lw=0.8)
    ax.set_xlabel("units, sorted by change (rank)")
    ax.set_ylabel("mean activation change\n(adversarial - clean; activation units)")
    ax.set_title("Every unit's change in mean activation under the attack", fontsize=9)
    named = [int(u) for u in moved_down[:top]] + [int(u) for u in moved_up[:top]][::-1]
    y = np.arange(len(named))
    bx.barh(y, d[named], color=[plots.BLUE if d[u] < 0 else plots.ORANGE for u in named])
    bx.set_yticks(y, [_unit_name(u, labels) for u in named], fontsize=7)
    bx.invert_yaxis()
    bx.axvline(0, color="#888", lw=0.8)
    bx.set_xlabel("mean activation change (activation units)")
    bx.set_ylabel("unit (number, label)")
    bx.set_title(f"{top} lowered most / {top} raised most", fontsize=9)
    fig.tight_layout()
    return plots._save(fig, path)


def importance_scatter(path: str, delta, ranking_row, class_name: str) -> str:
    """Each unit's activation change against its importance rank for one class."""
    plt = plots._plt()
    d = np.asarray(delta, float)
    pos = np.empty(d.size, int)
    pos[np.asarray(ranking_row)] = np.arange(d.size)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.scatter(pos, d[np.arange(d.size)], s=10, c=plots.BLUE)
    ax.axhline(0, color="#888", lw=0.8)
    ax.set_xlabel(f"importance rank for {class_name} (0 = most important)")
    ax.set_ylabel("mean activation change\n(activation units)")
    ax.set_title(f"Units important to {class_name}: how the attack moved them", fontsize=9)
    return plots._save(fig, path)


def write_attack(outdir: str, result, examples: str, index_link: str | None = None,
                 dissect_link: str | None = None) -> str:
    """``attack.html``, ``attack.json``, ``attack.npz`` and plots from an
    ``experiments.attack.AttackResult``."""
    os.makedirs(outdir, exist_ok=True)
    data = result.to_json()
    dump_json(os.path.join(outdir, "attack.json"), data)
    result.save(os.path.join(outdir, "attack.npz"))
    rel = data["relation"]
    unit_labels = result.unit_labels
    delta = result.shift.delta
    up, down = result.shift.most_moved(result.top)   # the extremes, for the plot
    figs = [unit_shift_plot(os.path.join(outdir, "unit_shift.png"), delta, up, down,
                            unit_labels)]
    ranking = result.ranking
    for key in ("source", "target"):
        c = data[f"{key}_index"]
        figs.append(importance_scatter(os.path.join(outdir, f"importance_{key}.png"),
                                       delta, ranking[c], data[f"{key}_class"]))
    rank_pos = {}
    for key in ("source", "target"):
        row = np.asarray(ranking[data[f"{key}_index"]])
        p = np.empty(row.size, int)
        p[row] = np.arange(row.size)
        rank_pos[key] = p
    rows = []
    for direction, units in (("down", rel["moved_down"]), ("up", rel["moved_up"])):
        for u in units:
            rows.append([direction, u, (unit_labels[u] or "") if unit_labels else "",
                         f"{delta[u]:+.4f}", rank_pos["source"][u], rank_pos["target"][u]])
    header = ["moved", "unit", "label", "change", f"rank for {result.source_class}",
              f"rank for {result.target_class}"]
    return write_text(os.path.join(outdir, "attack.html"), render(
        "report/attack.html", r=result, index_link=index_link, dissect_link=dissect_link,
        findings=findings_context(result.findings()),
        examples=plot_records([examples], outdir), figs=plot_records(figs, outdir),
        header=header, rows=rows))


def write_paint(outdir: str, result, grid: dict, index_link: str | None = None,
                dissection_link: str | None = None) -> str:
    """``paint.html``, ``paint.json`` and ``paint.npz`` from an
    ``experiments.paint.PaintResult``; ``grid``: the record of its before / after
    picture (``report.pictures.paint_grid``); ``dissection_link``: the dissection's
    report that chose the units (relative)."""
    os.makedirs(outdir, exist_ok=True)
    dump_json(os.path.join(outdir, "paint.json"), result.to_json())
    result.save(os.path.join(outdir, "paint.npz"))
    edits = "; ".join(f"{i + 2}: {e.concept} {e.mode}" for i, e in enumerate(result.edits))
    rows = []
    for e in result.edits:
        m = e.to_json().get("measured")
        units = e.units.tolist()
        rows.append([e.concept, e.mode, ", ".join(f"{v:g}" for v in e.box), len(units),
                     " ".join(map(str, units[:8])) + (" ..." if len(units) > 8 else ""),
                     f"{m['before_mean']:.1f}" if m else "", f"{m['after_mean']:.1f}" if m
                     else "", f"{m['relative_change']:+.1%}" if m and
                     m["relative_change"] is not None else ""])
    header = ["concept", "mode", "box (y0, x0, y1, x1)", "units", "best units",
              "concept pixels in box before", "after", "change"]
    return write_text(os.path.join(outdir, "paint.html"), render(
        "report/paint.html", r=result, index_link=index_link,
        dissection_link=dissection_link, edits=edits, grid=grid,
        findings=findings_context(result.findings()), header=header, rows=rows))
