"""``jaxdissect ablate``: what each unit of a classifier layer does for each class.

Dissects the layer (cached, for unit labels and IoU), then runs the paper's ablation
experiment (``jaxdissect.pipeline.ablation``): baseline per-class precision, recall and
balanced accuracy; single-unit ablation of every unit on the train split; each class's
k most important units removed / kept on the val split; importance versus IoU. Writes
``OUT/dissect/`` (unit cards), ``OUT/ablate/ablation.html`` (plots, tables, findings),
``OUT/ablate/ablation.json`` and ``OUT/index.html``.
"""

from __future__ import annotations

import argparse

from jaxdissect.commands._args import add_common, default

HELP = "classifier unit ablation: per-class importance of units, sets removed/kept"


def add_arguments(p):
    add_common(p, "AblateConfig")
    p.add_argument("--data", default=default("AblateConfig", "data"),
                   help="world | folder with train/ and val/ class folders | "
                        "tfds:places365_small")
    p.add_argument("--num-images", type=int, default=argparse.SUPPRESS,
                   help="val images (default: 2000 world images, all folder images)")
    p.add_argument("--train-images", type=int, default=argparse.SUPPRESS,
                   help="train images used to rank units (default: as many as val)")
    p.add_argument("--ks", default=",".join(map(str, default("AblateConfig", "ks"))),
                   help="set sizes k (comma-separated; capped at the number of units)")
    p.add_argument("--curve-classes", default="",
                   help="classes (names or indices, comma-separated) to chart for every k")
    p.add_argument("--chunk", type=int, default=default("AblateConfig", "chunk"),
                   help="edits per compiled step")


def run(args) -> int:
    from jaxdissect.pipeline.ablation import run_ablate
    from jaxdissect.pipeline.config import AblateConfig, from_args, parse_ks
    curve = tuple(c.strip() for c in args.curve_classes.split(",") if c.strip())
    o = run_ablate(from_args(AblateConfig, args, ks=parse_ks(args.ks), curve_classes=curve))
    s = o.result.summary()
    print(f"mean balanced accuracy (val): baseline {s['mean_baseline_ba']:.3f}, "
          f"top-{s['k']} removed {s['mean_removed_ba']:.3f}, "
          f"only top-{s['k']} kept {s['mean_kept_ba']:.3f}")
    for f in o.result.findings():
        print(f.plain())
    print(o.index)
    return 0
