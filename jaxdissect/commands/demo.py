"""``jaxdissect demo``: the whole paper on the synthetic world with the shipped weights.

Dissects the world classifier's conv5_3 and ablates its units, dissects the world
generator's layer4 over z samples and intervenes in it, and labels the classifier's
units with open-vocabulary words beside their dissection labels
(``jaxdissect.pipeline.demo``), then prints the findings, the two labellings'
agreement with a few units both ways, and the path of ``OUT/index.html``, which links
every part and states the paper's findings as measured here. Every sweep is cached
under OUT; re-running reuses the caches and a killed run resumes.
"""

from __future__ import annotations

from jaxdissect.commands._args import add_force, default

HELP = "run every experiment on the built-in synthetic world and write one linked report"

OPTIONS = (("out", str, "results folder"),
           ("images", int, "world images for dissection and for each ablation split"),
           ("samples", int, "z samples for the generator dissection"),
           ("sweep-samples", int, "z samples for the per-unit generator sweep"),
           ("removal-samples", int, "z samples for the removal curves"),
           ("insertion-samples", int, "z samples for the insertion experiment"),
           ("remove", str, "generator concept whose best-IoU units are removed (the "
                           "paper's example)"),
           ("insert", str, "generator concept whose best-IoU units are inserted by context "
                           "(the paper's example)"),
           ("generator", str, "generator checkpoint (the shipped world generator)"),
           ("batch-size", int, "inputs per compiled step"))


def add_arguments(p):
    for flag, kind, what in OPTIONS:
        p.add_argument(f"--{flag}", type=kind,
                       default=default("DemoConfig", flag.replace("-", "_")), help=what)
    add_force(p)
    p.add_argument("--no-describe", dest="describe", action="store_false",
                   help="skip the open-vocabulary labels of the classifier's units")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args) -> int:
    from jaxdissect.pipeline.config import DemoConfig, from_args
    from jaxdissect.pipeline.demo import describe_summary, run_demo
    o = run_demo(from_args(DemoConfig, args), log=lambda msg: print(msg, flush=True))
    for f in o.findings:
        print("  " + f.plain())
    if o.description is not None:
        print("Open-vocabulary labels beside the dissection labels (classifier conv5_3):")
        for line in describe_summary(o.description):
            print("  " + line)
    print(o.index)
    return 0
