"""``jaxdissect serve`` with a user's own generator behind it (``py:`` spec, no
dissection run: a hand-made report): 24 paints at once, bad requests among them, each
answered as it would be alone; the server goes on; errors name what was sent; the
command logs one line per request."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.support.app import fake_results, serving

GEN = "py:tests.support.user_models:linen_generator"     # 12 units at "block", 16x16 images
LABELS = ("-", "tree", "sky", "door")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def gen_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("live") / "results"
    fake_results(str(root), model=GEN, units=12, labels=LABELS, layer="block")
    with serving(root) as (url, app):
        yield url, app


def post(url, path, payload):
    req = urllib.request.Request(url + path, data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def paints(n):
    """``n`` different paint requests on 16x16 images, and some bad ones."""
    rng = np.random.default_rng(5)
    good = []
    for i in range(n):
        mask = (rng.random(256) < 0.4).astype(int)
        req = {"seed": int(rng.integers(0, 3)), "index": int(rng.integers(0, 4)),
               "mode": ("on", "off")[i % 2], "mask": "".join(map(str, mask))}
        if i % 3:
            req["units"] = sorted(rng.choice(12, 3, replace=False).tolist())
        else:
            req.update(concept=LABELS[1 + i % 3], n=4)
        good.append(req)
    bad = [({**good[0], "units": ["abc"]}, 'units entry must be an integer, got "abc"'),
           ({**good[0], "mask": "01"}, "mask must have 16x16 = 256 characters, got 2"),
           ({**good[0], "units": [12]}, "units entry must be in [0, 11], got 12"),
           ({**good[0], "mode": None}, 'mode must be "on" or "off", got null')]
    return good, bad


@pytest.mark.slow
def test_24_paints_at_once(gen_server):
    url, app = gen_server
    good, bad = paints(24)
    status, first = post(url, "/api/paint/0", good[0])     # loads and compiles the model
    assert status == 200, first
    with concurrent.futures.ThreadPoolExecutor(28) as pool:
        futures = [pool.submit(post, url, "/api/paint/0", r) for r in good] + \
                  [pool.submit(post, url, "/api/paint/0", r) for r, _ in bad]
        answers = [f.result() for f in futures]
    for (status, body), req in zip(answers, good):
        assert status == 200, body
        # the same image as the request made alone, after the others
        assert post(url, "/api/paint/0", req)[1]["image"] == body["image"]
        assert body["pixels"] == req["mask"].count("1")
        if "units" in req:
            assert body["units"] == req["units"]
    for (status, body), (_, message) in zip(answers[len(good):], bad):
        assert status == 400 and body["error"] == message
    # on and off edits changed the image where they could
    with urllib.request.urlopen(f"{url}/api/generate/0?seed=0&index=0", timeout=60) as r:
        assert r.status == 200 and r.read().startswith(b"\x89PNG")
    with urllib.request.urlopen(url + "/", timeout=60) as r:
        assert r.status == 200 and b"gen/dissect" in r.read()


def test_errors_name_what_was_sent(gen_server):
    url, _ = gen_server
    base = {"seed": 1, "index": 0, "mode": "on", "concept": "tree", "mask": "1" * 256}
    for change, message in [({"n": "abc"}, 'n must be an integer, got "abc"'),
                            ({"seed": None}, "seed must be an integer, got null"),
                            ({"units": "3,x"}, 'got "3,x"'),
                            ({"concept": "unicorn"}, 'got "unicorn"'),
                            ({"mask": "x" * 100}, 'got "xxxxxxxx')]:
        status, body = post(url, "/api/paint/0", {**base, **change})
        assert status == 400 and message in body["error"], (change, body)


def test_the_paint_page_asks_for_no_more_units_than_there_are(gen_server):
    url, _ = gen_server
    with urllib.request.urlopen(url + "/paint/0", timeout=60) as r:
        page = r.read().decode()
    assert 'id="n" type="number" min="1" max="12" value="12"' in page
    assert 'data-num-units="12"' in page
    assert "static report" in urllib.request.urlopen(url + "/", timeout=60).read().decode()


def test_no_link_to_a_report_page_that_is_not_there(tmp_path):
    d = fake_results(str(tmp_path / "results"))
    os.remove(os.path.join(d, "report.html"))
    with serving(tmp_path / "results") as (url, _):
        page = urllib.request.urlopen(url + "/", timeout=60).read().decode()
    assert "static report" not in page and "units" in page


@pytest.mark.slow
def test_serve_logs_one_line_per_request(tmp_path):
    """Loading a model (here one that does not exist: the loaders still import absl)
    gives the root logger a handler; each request is still logged once. The address
    printed carries the token asked for."""
    fake_results(str(tmp_path / "results"))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "jaxdissect.cli", "serve",
                             str(tmp_path / "results"), "--port", "0", "--token", "tok123"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert line.rstrip().endswith("/?token=tok123 (Ctrl-C stops)"), line
        url = line.split(" at ")[1].split("/?")[0]
        paths = ["/", "/api/generate/0", "/api/units/0", "/api/generate/0", "/units/0"]
        codes = []
        for path in paths:
            req = urllib.request.Request(url + path, headers={"Authorization": "token tok123"})
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    codes.append(r.status)
            except urllib.error.HTTPError as e:
                codes.append(e.code)
        assert codes == [200, 503, 200, 503, 200]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", err)            # werkzeug's colours
    logged = [ln for ln in plain.splitlines() if '"GET /' in ln]
    assert len(logged) == len(paths), err[-2000:]
    assert [next(p for p in paths if f"GET {p} " in ln) for ln in logged] == paths
