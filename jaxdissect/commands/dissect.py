"""``jaxdissect dissect``: label every unit of a layer with the concept it detects.

Writes ``OUT/report.html`` (unit cards with top images, sortable and filterable),
``OUT/concepts.svg``, ``OUT/report.json``, ``OUT/iou.npy``, ``OUT/tally.csv`` (the
original NetDissect's per-unit table) and ``OUT/cache/`` (the passes it resumes from;
re-running with the same arguments reuses them). ``--data broden:DIR --segmenter
broden`` dissects on Broden, ``--iou-rule netdissect`` with NetDissect's union.
"""

from __future__ import annotations

import argparse

from jaxdissect.commands._args import add_common, default

HELP = "dissect one layer of a classifier or generator: unit labels, IoU, HTML report"


def add_arguments(p):
    add_common(p, "DissectConfig")
    p.add_argument("--data", default=argparse.SUPPRESS,
                   help="world | image folder (Places layout) | tfds:places365_small | "
                        "broden:DIR (Broden layout) | z (default: world for classifiers, z "
                        "for generators)")
    p.add_argument("--num-images", type=int, default=argparse.SUPPRESS,
                   help="images / z samples (default: 2000 world images, all folder images, "
                        "10000 z samples)")
    p.add_argument("--seed", type=int, default=argparse.SUPPRESS,
                   help="world seed or z seed (default: 4 for world images, 1 for z)")
    p.add_argument("--topk", type=int, default=default("DissectConfig", "topk"),
                   help="top images per unit card")
    p.add_argument("--iou-rule", choices=("pnas", "netdissect"),
                   default=default("DissectConfig", "iou_rule"),
                   help="IoU union: the PNAS paper's, or the original NetDissect's, "
                        "counting a unit only in images where it touches the label's category")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out a folder's unreadable images (counted in the report)")
    p.add_argument("--significance", action="store_true",
                   help="test every label: a p-value against image permutations and a "
                        "bootstrap interval of its IoU, in one more pass over the data")
    p.add_argument("--max-p", type=float, default=argparse.SUPPRESS,
                   help="keep only labels with a p-value at most this (implies "
                        "--significance; default: every label is kept)")
    p.add_argument("--permutations", type=int, default=default("DissectConfig", "permutations"),
                   help="image permutations per label test (the smallest p-value is "
                        "1/(permutations+1))")


def run(args) -> int:
    from jaxdissect.pipeline.config import DissectConfig, from_args
    from jaxdissect.pipeline.dissection import run_dissect
    cfg = from_args(DissectConfig, args)
    o = run_dissect(cfg)
    if o.report is None:  # not the writing process (several processes, see --coordinator)
        return 0
    res, d = o.result, o.dissection
    concepts = len({res.best_label[u] for u in range(res.num_units) if res.labelled[u]})
    rule = f"IoU > {cfg.miniou}" + ("" if cfg.max_p is None else f", p <= {cfg.max_p:g}")
    print(f"{d.model.name} {d.layer}: {int(res.labelled.sum())}/{res.num_units} units "
          f"labelled ({rule}), {concepts} distinct concepts")
    if res.significance is not None:
        sig = res.significance
        print(f"significance: {int(sig.discoveries(0.01).sum())}/{len(sig.units)} tested "
              f"labels survive a 1% false-discovery rate ({sig.permutations} permutations)")
    print(o.report)
    return 0
