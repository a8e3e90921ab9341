"""Matplotlib figures of the ablation and intervention experiments (PNG files)."""

from __future__ import annotations

import os

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return os.path.basename(path)


BLUE, GREEN, ORANGE = "#4B4CBF", "#55B05B", "#F0883B"


def ablation_classes(path, class_names, base, removed, kept, k):
    """Per-class balanced accuracy: baseline, k most important removed, only k kept."""
    plt = _plt()
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(7, 0.28 * n + 1.2))
    y = np.arange(n)
    for vals, c, lab in ((base, GREEN, "no units removed"),
                         (removed, BLUE, f"{k} most important units removed"),
                         (kept, ORANGE, f"only those {k} kept")):
        v = np.asarray(vals, float)
        ax.scatter(v, y, s=22, c=c, label=f"{lab} (mean {np.nanmean(v):.1%})", zorder=3)
        ax.axvline(np.nanmean(v), color=c, lw=1, ls="--")
    ax.axvline(0.5, color="gray", lw=0.8)
    ax.set_yticks(y, class_names, fontsize=8)
    ax.set_ylabel("class")
    ax.set_xlabel("balanced single-class accuracy on val (fraction; chance 0.5)")
    ax.set_title(f"Per-class accuracy with each class's {k} most important units removed "
                 f"or kept", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _save(fig, path)


def ablation_k(path, ks, removed, kept, base):
    """Mean balanced accuracy over classes against the number of units in the set."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    r, k = np.asarray(removed, float), np.asarray(kept, float)
    ax.plot(ks, np.nanmean(r, 0), "o-", c=BLUE, label="k most important removed")
    ax.plot(ks, np.nanmean(k, 0), "o-", c=ORANGE, label="only the k most important kept")
    ax.axhline(np.nanmean(base), c=GREEN, lw=1, label="no units removed")
    ax.axhline(0.5, c="gray", lw=0.8, ls=":", label="chance")
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(x) for x in ks])
    ax.set_xlabel("k (units in each class's set, log scale)")
    ax.set_ylabel("mean balanced accuracy\n(val, fraction)")
    ax.set_title("Mean balanced accuracy against the size of the unit set", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def ablation_curve(path, class_name, k, removed, kept, base):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(k, removed, c=BLUE, lw=1.2, label="removing the most important units together")
    ax.plot(k, kept, c=ORANGE, lw=1.2, label="removing all but the most important units")
    ax.axhline(base, c=GREEN, lw=0.8, label="baseline")
    ax.set_xlabel("number of units removed / kept (units)")
    ax.set_ylabel("balanced accuracy (fraction)")
    ax.set_title(f"{class_name}: the most important units removed together, or kept alone",
                 fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def importance_vs_iou(path, rows, cutoff):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 2.6))
    rows = [r for r in rows if r["units"]]
    xs = [r["classes"] for r in rows]
    ys = [r["mean_iou"] for r in rows]
    err = [r["stderr"] or 0 for r in rows]
    ax.bar(xs, ys, yerr=err, color=BLUE, error_kw=dict(lw=1, capsize=4))
    for x, r in zip(xs, rows):
        ax.text(x, 0, f"n={r['units']}", ha="center", va="bottom", color="white", fontsize=7)
    ax.set_xticks(xs, [f">={x}" if r["at_least"] else str(x) for x, r in zip(xs, rows)])
    ax.set_xlabel(f"number of classes for which the unit is important (top {cutoff}; "
                  f"classes)")
    ax.set_ylabel("mean best IoU (0 to 1)")
    ax.set_title("Units important to more classes, and how well they match a concept",
                 fontsize=9)
    return _save(fig, path)


def removal_curve(path, concept, curve):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 2.8))
    n = curve["n_units"]
    ax.fill_between(n, curve["ci99_low"], curve["ci99_high"], color=GREEN, alpha=0.5,
                    label="99% confidence interval")
    ax.plot(n, curve["removed_fraction"], c=BLUE, lw=2, label="mean")
    ax.set_xlabel(f"units removed (count; ranked by IoU with {concept})")
    ax.set_ylabel(f"{concept} pixels removed\n(% of the unedited)")
    ax.set_title(f"Removing the units of {concept}", fontsize=9)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.grid(lw=0.4)
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def insertion_contexts(path, concept, summary, top=15):
    plt = _plt()
    rows = summary["contexts"][:top]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(rows) + 1))
    y = np.arange(len(rows))
    ax.barh(y, [r["mean_added"] for r in rows], xerr=[2.58 * r["stderr"] for r in rows],
            color=BLUE, error_kw=dict(lw=1, capsize=2))
    ax.set_yticks(y, [f"{r['name']} ({r['category']})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{concept} pixels added (share of the image; bars: 99% interval)")
    ax.set_ylabel("context label at the edit")
    ax.set_title(f"Inserting {concept}: the effect depends on the context", fontsize=9)
    return _save(fig, path)


def insertion_map(path, concept, summary):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.2, 3))
    im = ax.imshow(np.asarray(summary["per_location_mean_added"]), cmap="viridis")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the image added")
    ax.set_title(f"{concept} added per edit location", fontsize=9)
    ax.set_xlabel("edit location: feature-map column")
    ax.set_ylabel("feature-map row")
    return _save(fig, path)


def unit_ablation_heatmap(path, delta, label_names, baseline, min_share=0.01):
    plt = _plt()
    delta = np.asarray(delta, float)
    cols = [i for i in range(1, len(label_names)) if baseline[i] >= min_share]
    d = delta[:, cols] / np.maximum(np.asarray(baseline)[cols], 1e-9)[None, :]
    fig, ax = plt.subplots(figsize=(0.3 * len(cols) + 2, 0.06 * len(delta) + 1.5))
    lim = max(np.abs(d).max(), 1e-6)
    im = ax.imshow(d, aspect="auto", cmap="RdBu", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_xticks(range(len(cols)), [label_names[i] for i in cols], rotation=90, fontsize=7)
    ax.set_xlabel(f"concept (those covering at least {min_share:.0%} of the images)")
    ax.set_ylabel("unit (index)")
    fig.colorbar(im, ax=ax, label="relative change of pixel share")
    ax.set_title("zeroing one unit: change in each class's pixel share", fontsize=9)
    return _save(fig, path)
