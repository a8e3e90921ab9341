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
    p.add_argument("--warm", action="store_true",
                   help="load and compile every model before serving (else on first use)")


def run(args) -> int:
    import os

    from jaxdissect.app import create_app
    from jaxdissect.app.results import parse_model_overrides
    from jaxdissect.cli import UserError
    if not os.path.isdir(args.results):
        raise UserError(f"results folder {args.results!r} does not exist")
    if not 0 <= args.port < 65536:
        raise UserError(f"--port must be in [0, 65535], got {args.port}")
    from jaxdissect.app.access import is_loopback, new_token
    token = getattr(args, "token", None) or (None if is_loopback(args.host) else new_token())
    app = create_app(args.results, models=parse_model_overrides(getattr(args, "model", None)
                                                                or []),
                     host=args.host, token=token)
    if not app.config["RESULTS"].dissections:
        raise UserError(f"{args.results!r} holds no dissection (no report.json below it); "
                        "run jaxdissect demo or jaxdissect dissect first")
    if args.warm:
        app.config["RESULTS"].warm(log=print)
    from werkzeug.serving import make_server
    one_log_line_per_request()
    server = make_server(args.host, args.port, app, threaded=True)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {os.path.abspath(args.results)} at "
          f"http://{host}:{server.server_port}/{app.config['ACCESS'].url_suffix()} "
          "(Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def one_log_line_per_request() -> None:
    """Werkzeug's request log goes to its own stderr handler only: libraries loaded
    with a model (absl) give the root logger a handler too, which would repeat it."""
    import logging
    import sys
    log = logging.getLogger("werkzeug")
    log.setLevel(logging.INFO)
    log.propagate = False
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
