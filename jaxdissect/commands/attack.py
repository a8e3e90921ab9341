"""``jaxdissect attack``: a targeted Carlini–Wagner attack on a classifier, seen
through the units of one layer (the paper's "Applications": ski resort -> bedroom).

Attacks the correctly classified images of class ``--source``, measures each unit's mean
activation on the clean and the adversarial images, and relates the units moved most to
the classes' important units (``--ranking`` from ``jaxdissect ablate``, or single-unit
ablation here); units are named by a cached dissection (``jaxdissect.pipeline.attack``).
Writes ``OUT/attack.html``, ``attack.json``, ``examples.png``, ``adversarial.npy``,
plots, and ``OUT/dissect/``.
"""

from __future__ import annotations

import argparse

from jaxdissect.commands._args import add_common, default

HELP = "adversarial attack (Carlini-Wagner L2) and the units it moves"

OPTIONS = (("data", str, "world | image folder | tfds:NAME"),
           ("source", str, "class of the attacked images"),
           ("target", str, "class the attack aims for"),
           ("num-images", int, "images to attack"),
           ("search-images", int, "images searched for correctly classified source images"),
           ("steps", int, "Adam steps"), ("lr", float, "Adam learning rate (tanh space)"),
           ("c", float, "weight of the margin loss"), ("kappa", float, "confidence margin"),
           ("top", int, "k of the most moved / important units"),
           ("rank-images", int, "train-split images for the single-unit ablation ranking"),
           ("dissect-images", int, "images dissected to name units (0: do not dissect)"))


def add_arguments(p):
    add_common(p, "AttackConfig")
    for flag, kind, what in OPTIONS:
        p.add_argument(f"--{flag}", type=kind,
                       default=default("AttackConfig", flag.replace("-", "_")), help=what)
    p.add_argument("--ranking", default=argparse.SUPPRESS,
                   help="ablation.npz (or ablation.json) from jaxdissect ablate with the "
                        "per-class ranking (default: rank here by single-unit ablation)")
    p.add_argument("--seed", type=int, default=argparse.SUPPRESS,
                   help="data seed of the attacked images (default: the world's val seed)")


def run(args) -> int:
    from jaxdissect.pipeline.attack import run_attack
    from jaxdissect.pipeline.config import AttackConfig, from_args
    o = run_attack(from_args(AttackConfig, args))
    for f in o.result.findings():
        print(f.plain())
    print(o.page)
    return 0
