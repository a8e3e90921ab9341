"""``jaxdissect serve``'s server: the app over a results folder, on a werkzeug server that
logs one line per request, at an address that answers only its user."""

from __future__ import annotations

import os

from jaxdissect.errors import UserError


def serve(results: str, *, host: str = "127.0.0.1", port: int = 8000,
          token: str | None = None, models=None, weights=None, warm: bool = False) -> int:
    """Serves ``results`` until Ctrl-C. ``token``: asked of every request (default: a
    random one beyond loopback, none on loopback); ``models``: ``[DISSECTION=]SPEC``
    overrides of the recorded model specs; ``weights``: ``[DISSECTION=]FILE`` overrides
    of their recorded weights; ``warm``: load every model first."""
    from werkzeug.serving import make_server

    from jaxdissect.app import create_app
    from jaxdissect.app.access import is_loopback, new_token
    from jaxdissect.app.results import parse_model_overrides
    if not os.path.isdir(results):
        raise UserError(f"results folder {results!r} does not exist")
    if not 0 <= port < 65536:
        raise UserError(f"--port must be in [0, 65535], got {port}")
    token = token or (None if is_loopback(host) else new_token())
    app = create_app(results, models=parse_model_overrides(models or []), host=host,
                     token=token, weights=parse_model_overrides(weights or []))
    if not app.config["RESULTS"].dissections:
        raise UserError(f"{results!r} holds no dissection (no report.json below it); "
                        "run jaxdissect demo or jaxdissect dissect first")
    if warm:
        app.config["RESULTS"].warm(log=print)
    one_log_line_per_request()
    server = make_server(host, port, app, threaded=True)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {os.path.abspath(results)} at "
          f"http://{shown}:{server.server_port}/{app.config['ACCESS'].url_suffix()} "
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
