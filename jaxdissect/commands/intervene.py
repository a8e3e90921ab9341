"""``jaxdissect intervene``: what turning generator units off and on does to the scene.

Dissects the generator layer over z samples (cached; segmenting the generated images),
then runs the paper's generator experiments (``jaxdissect.pipeline.intervention``):
per-unit ablation effect on every class's pixel share; removal of a concept's n =
0..30 best-IoU units with 99% confidence intervals; insertion of a concept's top-20
units at their 99.5% quantile values at each feature-map location, broken down by the
context label there. Writes ``OUT/dissect/``, ``OUT/intervene/intervention.html`` and
``intervention.json``, and ``OUT/index.html``.
"""

from __future__ import annotations

import argparse

from jaxdissect.commands._args import add_common, default

HELP = "generator interventions: unit ablation, concept removal and insertion by context"


def add_arguments(p):
    add_common(p, "InterveneConfig")
    d = lambda name: default("InterveneConfig", name)  # noqa: E731
    for flag, what in (("num-samples", "z samples for the dissection, and at most for each "
                        "experiment (paper: 10000)"),
                       ("sweep-samples", "z samples for the per-unit ablation sweep (its "
                        "cost is units x samples generator passes)"),
                       ("removal-samples", "z samples for the removal curves"),
                       ("insertion-samples", "z samples for the insertion experiment (cost: "
                        "samples x locations)"), ("seed", "z seed (paper: 1)"),
                       ("max-remove", "removal curves go from 0 to this many units"),
                       ("insert-units", "units inserted per concept"),
                       ("chunk", "edits per compiled step")):
        p.add_argument(f"--{flag}", type=int, default=d(flag.replace("-", "_")), help=what)
    p.add_argument("--remove", action="append", default=argparse.SUPPRESS,
                   help="concept whose best-IoU units are removed (repeatable; default: "
                        "tree as the paper if labelled, else the object with the most "
                        "labelled units)")
    p.add_argument("--insert", action="append", default=argparse.SUPPRESS,
                   help="concept whose top units are inserted (repeatable; default: door "
                        "if labelled, else the removal concept)")


def run(args) -> int:
    from jaxdissect.pipeline.config import InterveneConfig, from_args
    from jaxdissect.pipeline.intervention import run_intervene
    o = run_intervene(from_args(InterveneConfig, args))
    for f in o.result.findings():
        print(f.plain())
    print(o.index)
    return 0
