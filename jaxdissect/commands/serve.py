"""``jaxdissect serve``: a local web app over a results folder.

Browse a dissection's units (cards with filters and sorting, a page per unit with
its top images and IoU for every concept), paint on generated images (brush a
region, pick a concept's units or unit numbers, turn them on or off, and the
generator redraws the image) and switch a classifier's units off or on to see its
class probabilities change. Works on the folder of ``jaxdissect demo``,
``dissect``, ``ablate``, ``intervene`` or ``paint``: every ``report.json`` below
RESULTS_DIR is a dissection it serves (see ``jaxdissect.app``).

The app answers only its user: on loopback (the default) only requests addressed to
127.0.0.1 or localhost; bound beyond it (``--host``), only requests with its token,
printed in the address to open (``jaxdissect.app.access``).
"""

from __future__ import annotations

import argparse

HELP = "explore a results folder in the browser: units, live painting, unit switches"


def add_arguments(p):
    p.add_argument("results", metavar="RESULTS_DIR",
                   help="a results folder (jaxdissect demo / dissect / paint output)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only; "
                        "any other address asks browsers for a token)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    p.add_argument("--token", default=argparse.SUPPRESS,
                   help="the token the app asks for (default: a random one where --host "
                        "is beyond loopback, none on loopback)")
    p.add_argument("--model", action="append", default=argparse.SUPPRESS,
                   metavar="[DISSECTION=]SPEC",
                   help="the model of a dissection whose report.json does not name a "
                        "loadable model (py:MODULE:FACTORY specs), e.g. "
                        "generator/dissect=py:mymod:spec; repeatable (default: as recorded "
                        "in each report.json)")
    p.add_argument("--weights", action="append", default=argparse.SUPPRESS,
                   metavar="[DISSECTION=]FILE",
                   help="the weights file (or random) of a dissection's torchvision:/timm: "
                        "model, where the recorded one has moved; repeatable (default: as "
                        "recorded in each report.json)")
    p.add_argument("--warm", action="store_true",
                   help="load and compile every model before serving (else on first use)")


def run(args) -> int:
    from jaxdissect.app.serving import serve
    return serve(args.results, host=args.host, port=args.port,
                 token=getattr(args, "token", None), models=getattr(args, "model", None),
                 weights=getattr(args, "weights", None), warm=args.warm)
