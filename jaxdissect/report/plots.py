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


def _nanmean(v, axis=None):
    """The mean of the finite values (NaN where there are none), without a warning."""
    v = np.asarray(v, float)
    ok = np.isfinite(v)
    n = ok.sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, v, 0.0).sum(axis) / np.maximum(n, 1), np.nan)


def _fraction(v) -> str:
    return f"{float(v):.1%}" if np.isfinite(v) else "n/a"


#: why a balanced accuracy is missing, as the plots state it
UNDEFINED = ("n/a: balanced accuracy undefined (no val images of the class, or none of "
             "the others)")


def _state_missing(ax, missing: int, total: int, what: str) -> None:
    """Writes on ``ax`` how many of ``total`` ``what`` have no value (none: nothing)."""
    if not missing:
        return
    text = (f"no {what} has a value\n{UNDEFINED}" if missing == total else
            f"{missing} of {total} {what} n/a (not drawn)\n{UNDEFINED}")
    ax.text(0.5, 0.5 if missing == total else 0.02, text, transform=ax.transAxes,
            ha="center", va="center" if missing == total else "bottom", fontsize=8,
            color="dimgray", bbox=dict(fc="white", ec="lightgray", alpha=0.9))


def ablation_classes(path, class_names, base, removed, kept, k):
    """Per-class balanced accuracy: baseline, k most important removed, only k kept.
    A class without a value (NaN) is marked n/a on its row."""
    plt = _plt()
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(7, 0.28 * n + 1.2))
    y = np.arange(n)
    series = [np.asarray(v, float) for v in (base, removed, kept)]
    for v, c, lab in zip(series, (GREEN, BLUE, ORANGE),
                         ("no units removed", f"{k} most important units removed",
                          f"only those {k} kept")):
        mean = _nanmean(v)
        ax.scatter(v, y, s=22, c=c, label=f"{lab} (mean {_fraction(mean)})", zorder=3)
        if np.isfinite(mean):
            ax.axvline(mean, color=c, lw=1, ls="--")
    missing = ~np.all([np.isfinite(v) for v in series], axis=0)
    for row in np.flatnonzero(missing):
        ax.text(0.01, row, "n/a", va="center", fontsize=7, color="dimgray")
    ax.axvline(0.5, color="gray", lw=0.8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_yticks(y, class_names, fontsize=8)
    ax.set_ylabel("class")
    ax.set_xlabel("balanced single-class accuracy on val (fraction; chance 0.5)")
    ax.set_title(f"Per-class accuracy with each class's {k} most important units removed "
                 f"or kept", fontsize=9)
    _state_missing(ax, int(missing.sum()), n, "class")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _save(fig, path)


def ablation_k(path, ks, removed, kept, base):
    """Mean balanced accuracy over classes against the number of units in the set
    (the classes with a value; none: the plot says so)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    r, k = _nanmean(removed, 0), _nanmean(kept, 0)
    b = float(_nanmean(base))
    ax.plot(ks, r, "o-", c=BLUE, label="k most important removed")
    ax.plot(ks, k, "o-", c=ORANGE, label="only the k most important kept")
    if np.isfinite(b):
        ax.axhline(b, c=GREEN, lw=1, label="no units removed")
    ax.axhline(0.5, c="gray", lw=0.8, ls=":", label="chance")
    ax.set_xscale("log")
    ax.set_xlim(min(ks) / 1.5, max(ks) * 1.5)      # the set sizes, drawn or not
    ax.set_xticks(ks, [str(x) for x in ks])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel("k (units in each class's set, log scale)")
    ax.set_ylabel("mean balanced accuracy\n(val, fraction)")
    if not np.isfinite(np.concatenate([r, k])).any():
        ax.set_ylim(0, 1)
    ax.set_title("Mean balanced accuracy against the size of the unit set", fontsize=9)
    undefined = ~np.isfinite(np.asarray(base, float))
    _state_missing(ax, int(undefined.sum()), undefined.size, "class")
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def ablation_curve(path, class_name, k, removed, kept, base):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(k, removed, c=BLUE, lw=1.2, label="removing the most important units together")
    ax.plot(k, kept, c=ORANGE, lw=1.2, label="removing all but the most important units")
    if np.isfinite(base):
        ax.axhline(base, c=GREEN, lw=0.8, label="baseline")
    values = np.concatenate([np.ravel(removed), np.ravel(kept), [base]]).astype(float)
    if not np.isfinite(values).any():
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.5, f"{class_name}: no value\n{UNDEFINED}", transform=ax.transAxes,
                ha="center", va="center", fontsize=8, color="dimgray")
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
    mean = np.array([r["mean_added"] for r in rows], float)
    if rows and all("ci99" in r for r in rows):    # bootstrap over samples: within range
        ci = np.array([[np.nan if v is None else v for v in r["ci99"]] for r in rows], float)
        ci = np.where(np.isfinite(ci), ci, mean[:, None])       # no interval: no bar
        err = np.abs(np.stack([mean - ci[:, 0], ci[:, 1] - mean]))
    else:
        err = [2.58 * r["stderr"] for r in rows]
    ax.barh(y, mean, xerr=err, color=BLUE, error_kw=dict(lw=1, capsize=2))
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
