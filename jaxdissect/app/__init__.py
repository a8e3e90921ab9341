"""``jaxdissect serve``: a local web app (Flask) over a results folder.

Pages: ``/`` the dissections found; ``/units/K`` a dissection's unit cards (filter
by category, label and IoU, sort; silent units shown as such); ``/unit/K/U`` one
unit's top images and its IoU with every concept; ``/paint/K`` (generators) brush a
region, choose a concept's units or unit numbers, on or off, and the generator
redraws the image; ``/classify/K`` (classifiers) switch units off or on and see the
class probabilities change. ``/files/PATH`` serves the results folder's own files
(its reports and thumbnails) and nothing outside it.

The JSON API behind the pages: ``GET /api/units/K``, ``GET /api/generate/K?seed=&
index=`` (PNG), ``POST /api/paint/K`` ``{seed, index, mask, mode, concept, n | units}``
(``mask``: ``H*W`` characters "0"/"1", row-major, at the generated image's size),
``GET /api/image/K/I`` (PNG), ``POST /api/classify/K`` ``{index, off, on}``. A bad
request gets a 4xx answer with ``{"error": message}``; the server goes on.

The app answers only its user (``jaxdissect.app.access``): on loopback, only requests
addressed to a loopback name; beyond it, only requests that carry its token.
"""

from __future__ import annotations

import base64
import os

from jaxdissect.app.results import Results

__all__ = ["create_app", "Results"]


def create_app(results_dir: str, models: dict[str, str] | None = None,
               host: str = "127.0.0.1", token: str | None = None,
               weights: dict[str, str] | None = None):
    """The Flask app serving ``results_dir``; ``models`` and ``weights`` (``--weights``
    files) as ``parse_model_overrides``;
    ``host`` the address it is served on and ``token`` what it asks for there
    (``jaxdissect.app.access``: needed beyond loopback)."""
    from flask import Flask

    from jaxdissect.app import access, routes
    from jaxdissect.report.html import TEMPLATES
    here = os.path.dirname(os.path.abspath(__file__))
    # one templates folder for the app's pages and the static report's (templates/)
    app = Flask("jaxdissect.app", template_folder=TEMPLATES,
                static_folder=os.path.join(here, "static"), static_url_path="/static")
    app.config["RESULTS"] = Results(results_dir, models, weights)
    app.config["MAX_CONTENT_LENGTH"] = 4 * 1024 * 1024   # a mask is a few kB
    app.json.sort_keys = False
    app.config["ACCESS"] = access.Access(host, token)
    access.register(app, app.config["ACCESS"])
    routes.register(app)
    return app


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
