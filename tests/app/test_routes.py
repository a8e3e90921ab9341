"""``jaxdissect serve`` against hostile and malformed requests, on loopback: only the
results folder's files are served, bad requests get a 4xx answer with a message, and
the server goes on answering."""

from __future__ import annotations

import http.client
import json
import os

import pytest

from tests.support.app import fake_results, serving


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    root = base / "results"
    fake_results(str(root))
    (base / "secret.txt").write_text("outside the results folder")
    os.symlink(base / "secret.txt", root / "link.txt")
    os.symlink(base, root / "linkdir")
    with serving(root) as (url, app):
        yield url, app


def raw(url, method, path, body=None, headers=None):
    """The request exactly as written (no client-side path normalisation)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    if r.status in (301, 302, 307, 308) and method == "GET":   # follow it, as a browser would
        return raw(url, method, r.getheader("Location").removeprefix(url), body, headers)
    return r.status, r.getheader("Content-Type", ""), data


@pytest.mark.parametrize("path", [
    "/files/../secret.txt", "/files/%2e%2e/secret.txt", "/files/..%2fsecret.txt",
    "/files/gen/../../secret.txt", "/files//etc/passwd", "/files/%2Fetc%2Fpasswd",
    "/files/link.txt", "/files/linkdir/secret.txt", "/files/gen", "/files/nothing.json",
    "/static/../routes.py", "/static/%2e%2e/routes.py", "/files/..\\secret.txt",
])
def test_nothing_outside_the_results_folder(server, path):
    url, _ = server
    status, _, data = raw(url, "GET", path)
    assert status in (400, 404), (path, status)
    assert b"outside the results folder" not in data
    assert b"import" not in data


def test_results_files_are_served(server):
    url, _ = server
    status, ctype, data = raw(url, "GET", "/files/gen/dissect/report.html")
    assert status == 200 and data == b"<html>report</html>" and "text/html" in ctype
    status, _, data = raw(url, "GET", "/files/gen/dissect/report.json")
    assert status == 200 and json.loads(data)["layer"] == "layer4"


def _post(url, path, payload, raw_body=None, ctype="application/json"):
    body = raw_body if raw_body is not None else json.dumps(payload)
    return raw(url, "POST", path, body=body, headers={"Content-Type": ctype})


GOOD = {"seed": 1, "index": 0, "mode": "on", "concept": "tree", "n": 2, "mask": "0101"}


@pytest.mark.parametrize("change, code, message", [
    ({"mode": "sideways"}, 400, "mode"),
    ({"mode": None}, 400, "mode"),
    ({"concept": "unicorn"}, 400, "concept"),
    ({"concept": ["tree"]}, 400, "concept"),
    ({"n": 0}, 400, "n must be"),
    ({"n": "many"}, 400, "n must be an integer"),
    ({"seed": -1}, 400, "seed"),
    ({"seed": 1.5}, 400, "seed"),
    ({"index": True}, 400, "index"),
    ({"mask": "01x1"}, 400, "mask"),
    ({"mask": [0, 1]}, 400, "mask"),
    ({"units": [0, 99]}, 400, "units entry"),
    ({"units": []}, 400, "at least one"),
    ({"units": "0,1"}, 400, "units"),
])
def test_bad_paint_requests(server, change, code, message):
    url, _ = server
    status, ctype, data = _post(url, "/api/paint/0", {**GOOD, **change})
    assert status == code
    assert "application/json" in ctype
    assert message in json.loads(data)["error"]


@pytest.mark.parametrize("method, path, body, code", [
    ("POST", "/api/paint/0", "{not json", 400),
    ("POST", "/api/paint/0", "[1, 2]", 400),
    ("POST", "/api/paint/0", "", 400),
    ("POST", "/api/paint/9", json.dumps(GOOD), 404),
    ("POST", "/api/classify/0", json.dumps({"index": 0}), 404),   # a generator's
    ("GET", "/api/paint/0", None, 405),
    ("GET", "/api/generate/0?seed=abc", None, 400),
    ("GET", "/api/generate/0?index=-3", None, 400),
    ("GET", "/api/units/nope", None, 404),
    ("GET", "/api/nothing", None, 404),
    ("POST", "/api/paint/0", "x" * (5 * 1024 * 1024), 413),
])
def test_malformed_requests(server, method, path, body, code):
    url, _ = server
    status, ctype, data = raw(url, method, path, body=body,
                              headers={"Content-Type": "application/json"})
    assert status == code, data[:200]
    if path.startswith("/api/") and code != 413:
        assert json.loads(data)["error"]


def test_pages_404_with_a_message(server):
    url, _ = server
    for path in ("/units/7", "/unit/0/6", "/classify/0", "/paint/x"):
        status, ctype, data = raw(url, "GET", path)
        assert status == 404 and "text/html" in ctype and b"<h1>404</h1>" in data


def test_a_model_that_cannot_load_is_a_clear_503_and_the_server_goes_on(server):
    url, _ = server
    status, _, data = _post(url, "/api/paint/0", GOOD)
    assert status == 503
    assert "no-such-model" in json.loads(data)["error"]
    status, _, data = raw(url, "GET", "/")
    assert status == 200 and b"gen/dissect" in data


def test_pages_and_units(server):
    url, _ = server
    status, _, data = raw(url, "GET", "/api/units/0")
    units = json.loads(data)["units"]
    assert status == 200 and len(units) == 6
    assert [u["fires"] for u in units] == [True] * 5 + [False]
    assert units[5]["labelled"] is False and units[5]["image"] is None
    status, _, page = raw(url, "GET", "/unit/0/5")
    assert status == 200 and b"never fires" in page
    status, _, page = raw(url, "GET", "/unit/0/1")
    assert status == 200 and b"IoU with each concept" in page
    for path in ("/", "/units/0", "/paint/0", "/static/app.js", "/static/app.css"):
        assert raw(url, "GET", path)[0] == 200, path
