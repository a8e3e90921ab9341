"""Running ``jaxdissect serve``'s app on loopback in a test, and a hand-made results
folder (no model behind it) for the tests of requests the app must refuse."""

from __future__ import annotations

import contextlib
import json
import os
import threading

import numpy as np

from jaxdissect.app import create_app


@contextlib.contextmanager
def serving(results_dir, models=None, **access):
    """``http://127.0.0.1:PORT`` of the app on ``results_dir`` in a thread (loopback;
    ``access``: ``create_app``'s ``host`` and ``token``, as if served there)."""
    from werkzeug.serving import make_server
    app = create_app(str(results_dir), models=models, **access)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app
    finally:
        server.shutdown()
        thread.join(10)


def fake_results(root, model="no-such-model", units=6, labels=("-", "tree", "sky", "door"),
                 layer="layer4"):
    """A results folder with one generator dissection's report.json and iou.npy
    (unit 5 silent); its model does not exist."""
    d = os.path.join(root, "gen", "dissect")
    os.makedirs(os.path.join(d, "units"), exist_ok=True)
    rng = np.random.default_rng(0)
    iou = np.zeros((units, len(labels)))
    iou[:-1, 1:] = rng.uniform(0, 0.2, (units - 1, len(labels) - 1))
    np.save(os.path.join(d, "iou.npy"), iou)
    recs = []
    for u in range(units):
        best = int(iou[u].argmax())
        recs.append({"unit": u, "label": labels[best], "category": "object",
                     "iou": float(iou[u, best]), "labelled": bool(iou[u, best] > 0.04),
                     "threshold": 0.0 if u == units - 1 else 1.0, "image": None})
    report = {"model": model, "layer": layer, "quantile": 0.01, "miniou": 0.04,
              "num_images": 10, "data": "z@1", "units": recs,
              "dissection": {"labels": {"names": list(labels),
                                        "categories": ["-"] + ["object"] * (len(labels) - 1)},
                             "levels": {"0.01": [1.0] * units, "0.005": [2.0] * units}}}
    with open(os.path.join(d, "report.json"), "w") as f:
        json.dump(report, f)
    with open(os.path.join(d, "report.html"), "w") as f:
        f.write("<html>report</html>")
    return d
