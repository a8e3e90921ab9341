"""The app's pages and JSON API (see ``jaxdissect.app``)."""

from __future__ import annotations

import json
import os

from flask import abort, current_app, jsonify, render_template, request, send_file
from werkzeug.exceptions import HTTPException

MAX_SEED = 2**31 - 1
MAX_INDEX = 1_000_000


def results():
    return current_app.config["RESULTS"]


def dissection(key: str, kind: str | None = None):
    try:
        d = results().get(key)
    except KeyError as e:
        abort(404, str(e.args[0]))
    if kind is not None and d.kind != kind:
        abort(404, f"dissection {key} ({d.id}) is of a {d.kind}, not a {kind}")
    return d


def _body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "expected a JSON object as the request body")
    return body


def shown(value, limit: int = 40) -> str:
    """``value`` as it was sent (JSON), cut to ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _int(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        abort(400, f"{name} must be an integer, got {shown(value)}")
    try:
        v = int(value)
    except ValueError:
        abort(400, f"{name} must be an integer, got {shown(value)}")
    if not low <= v <= high:
        abort(400, f"{name} must be in [{low}, {high}], got {v}")
    return v


def _units(value, name: str, num_units: int) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > num_units:
        abort(400, f"{name} must be a list of at most {num_units} unit numbers, got "
                   f"{shown(value)}")
    return [_int(u, f"{name} entry", 0, num_units - 1) for u in value]


def _live(d):
    try:
        return d.live()
    except (LookupError, ValueError) as e:
        abort(503, str(e))


def register(app) -> None:
    @app.errorhandler(HTTPException)
    def http_error(e):
        if request.path.startswith("/api/"):
            return jsonify(error=e.description, status=e.code), e.code
        return render_template("app/error.html", code=e.code, message=e.description), e.code

    @app.errorhandler(Exception)
    def other_error(e):          # the server answers and goes on
        current_app.logger.exception("request failed")
        msg = f"{type(e).__name__}: {e}"
        if request.path.startswith("/api/"):
            return jsonify(error=msg, status=500), 500
        return render_template("app/error.html", code=500, message=msg), 500

    # ------------------------------------------------------------------ pages

    @app.get("/")
    def index():
        res = results()
        return render_template(
            "app/index.html", dissections=[d.summary() for d in res.dissections.values()],
            root=res.root, has_index=os.path.isfile(os.path.join(res.root, "index.html")))

    @app.get("/units/<key>")
    def units_page(key):
        d = dissection(key)
        from jaxdissect.report.html import card_units
        return render_template("app/units.html", d=d.summary(), units=card_units(d.units))

    @app.get("/unit/<key>/<int:unit>")
    def unit_page(key, unit):
        d = dissection(key)
        units = d.units
        if not 0 <= unit < len(units):
            abort(404, f"unit {unit} outside 0..{len(units) - 1}")
        return render_template("app/unit.html", d=d.summary(), u=units[unit],
                               concepts=d.concept_ious(unit), num_units=len(units))

    @app.get("/paint/<key>")
    def paint_page(key):
        d = dissection(key, "generator")
        concepts = _concepts(d)
        return render_template("app/paint.html", d=d.summary(), concepts=concepts,
                               seed=d.data_seed if d.data_seed is not None else 1,
                               n=min(20, d.num_units))

    @app.get("/classify/<key>")
    def classify_page(key):
        d = dissection(key, "classifier")
        units = sorted(d.units, key=lambda u: (not u.get("labelled"), -u.get("iou", 0)))
        return render_template("app/classify.html", d=d.summary(), units=units)

    @app.get("/files/<path:rel>")
    def files(rel):
        root = results().root
        path = os.path.realpath(os.path.join(root, rel))
        # only files inside the results folder (no "..", no absolute paths, no links out)
        if os.path.commonpath([root, path]) != root or not os.path.isfile(path):
            abort(404, f"no file {rel!r} in the results folder")
        return send_file(path)

    # -------------------------------------------------------------------- API

    @app.get("/api/dissections")
    def api_dissections():
        return jsonify([d.summary() for d in results().dissections.values()])

    @app.get("/api/units/<key>")
    def api_units(key):
        d = dissection(key)
        return jsonify(units=d.units, layer=d.layer, model=d.model_name)

    @app.get("/api/generate/<key>")
    def api_generate(key):
        d = dissection(key, "generator")
        seed = _int(request.args.get("seed", "1"), "seed", 0, MAX_SEED)
        index = _int(request.args.get("index", "0"), "index", 0, MAX_INDEX)
        from jaxdissect.app.live import png_bytes
        img = _live(d).generate(seed, index)
        return _png(png_bytes(img))

    @app.post("/api/paint/<key>")
    def api_paint(key):
        import numpy as np

        from jaxdissect.app import data_url
        from jaxdissect.app.live import png_bytes
        d = dissection(key, "generator")
        body = _body()
        seed = _int(body.get("seed", 1), "seed", 0, MAX_SEED)
        index = _int(body.get("index", 0), "index", 0, MAX_INDEX)
        mode = body.get("mode")
        if mode not in ("on", "off"):
            abort(400, f"mode must be \"on\" or \"off\", got {shown(mode)}")
        if body.get("units") is not None:
            units = _units(body["units"], "units", d.num_units)
            if not units:
                abort(400, "units must name at least one unit")
        else:
            concept = body.get("concept")
            if not isinstance(concept, str) or concept not in d.label_names[1:]:
                abort(400, f"concept must be one of the dissection's labels, got "
                           f"{shown(concept)}")
            n = _int(body.get("n", min(20, d.num_units)), "n", 1, d.num_units)
            units = d.concept_units(concept, n)
        mask = body.get("mask")
        if not isinstance(mask, str) or mask.strip("01"):
            abort(400, "mask must be a string of '0' and '1' characters (row-major), got "
                       f"{shown(mask)}")
        painter = _live(d)
        h, w = painter.image_hw
        if len(mask) != h * w:
            abort(400, f"mask must have {h}x{w} = {h * w} characters, got {len(mask)}")
        m = (np.frombuffer(mask.encode("ascii"), np.uint8) == ord("1")).reshape(h, w)
        img, seconds = painter.paint(seed, index, m.astype(np.float32), units, mode)
        return jsonify(image=data_url(png_bytes(img)), units=units, mode=mode,
                       ms=round(seconds * 1000, 1), pixels=int(m.sum()))

    @app.get("/api/image/<key>/<int:index>")
    def api_image(key, index):
        from jaxdissect.app.live import png_bytes
        d = dissection(key, "classifier")
        sw = _live(d)
        if index >= sw.num_images:
            abort(404, f"image {index} outside 0..{sw.num_images - 1}")
        return _png(png_bytes(sw.image(index)[0]))

    @app.get("/api/images/<key>")
    def api_images(key):
        d = dissection(key, "classifier")
        sw = _live(d)
        return jsonify(count=sw.num_images)

    @app.post("/api/classify/<key>")
    def api_classify(key):
        d = dissection(key, "classifier")
        body = _body()
        index = _int(body.get("index", 0), "index", 0, MAX_INDEX)
        off = _units(body.get("off"), "off", d.num_units)
        on = _units(body.get("on"), "on", d.num_units)
        if set(off) & set(on):
            abort(400, f"units {sorted(set(off) & set(on))} are both off and on")
        sw = _live(d)
        if index >= sw.num_images:
            abort(400, f"index must be in [0, {sw.num_images - 1}], got {index}")
        edited, base, seconds = sw.probabilities(index, off, on)
        label = sw.image(index)[1]
        order = sorted(range(len(base)), key=lambda c: -max(base[c], edited[c]))
        return jsonify(
            classes=[{"name": sw.class_names[c], "p": float(edited[c]), "base": float(base[c])}
                     for c in order],
            label=None if label is None else sw.class_names[label],
            ms=round(seconds * 1000, 1), off=off, on=on)


def _concepts(d) -> list[dict]:
    """Concepts with labelled units first (most units first), then the others."""
    counts = {}
    for u in d.units:
        if u.get("labelled"):
            counts[u["label"]] = counts.get(u["label"], 0) + 1
    names = d.label_names[1:]
    cats = d.label_categories[1:] if len(d.label_categories) == len(d.label_names) else \
        [""] * len(names)
    out = [{"name": n, "category": c, "units": counts.get(n, 0)} for n, c in zip(names, cats)]
    return sorted(out, key=lambda r: (-r["units"], r["name"]))


def _png(data: bytes):
    from flask import Response
    return Response(data, mimetype="image/png", headers={"Cache-Control": "no-store"})
