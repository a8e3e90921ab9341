"""``jaxdissect paint``: add or remove objects in generated images by turning a
concept's units on or off in a region (GANPaint; the paper's "Applications").

Dissects the generator layer over z samples (cached), takes each edited concept's
``--units`` best-IoU units and paints every ``--edit CONCEPT:on|off:y0,x0,y1,x1`` on
``--num-z`` latents in one vmapped program (``jaxdissect.pipeline.paint``). Writes
``OUT/paint.html``, ``paint.json``, ``painted.png``, ``images/*.png``, ``painted.npy``
and ``OUT/dissect/``.
"""

from __future__ import annotations

import argparse

from jaxdissect.commands._args import add_common, default

HELP = "paint with units: turn a concept's units on/off in a region of generated images"


def add_arguments(p):
    add_common(p, "PaintConfig")
    p.add_argument("--edit", action="append", default=argparse.SUPPRESS,
                   metavar="CONCEPT:MODE:BOX",
                   help="e.g. tree:off:0,0,1,0.5 (box y0,x0,y1,x1 as fractions of the image; "
                        "repeatable; default: the object with the most labelled units, off "
                        "in the left half and on in the right half)")
    for flag, what in (("units", "best-IoU units per concept"), ("num-z", "latents painted"),
                       ("z-seed", "seed of the painted latents"),
                       ("num-samples", "z samples for the dissection (paper: 10000)"),
                       ("seed", "z seed of the dissection (paper: 1)")):
        p.add_argument(f"--{flag}", type=int,
                       default=default("PaintConfig", flag.replace("-", "_")), help=what)


def run(args) -> int:
    from jaxdissect.pipeline.config import PaintConfig, from_args
    from jaxdissect.pipeline.paint import run_paint
    o = run_paint(from_args(PaintConfig, args))
    for rec in (e.to_json() for e in o.result.edits):
        m = rec.get("measured")
        print(f"{rec['concept']} {rec['mode']} in box {rec['box']}" + (
            f": {rec['concept']} pixels in the box {m['before_mean']:.1f} -> "
            f"{m['after_mean']:.1f} per image" if m else ""))
    for f in o.result.findings():
        print(f.plain())
    print(o.page)
    return 0
