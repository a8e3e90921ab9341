"""``jaxdissect serve`` answers only its user: on loopback, only requests addressed to a
loopback name (a DNS-rebound name is refused); served beyond loopback, only requests
that carry its token. Refused requests get a 403 with a message and no results."""

from __future__ import annotations

import http.client
import json

import pytest

from jaxdissect.app.access import Access, host_name, is_loopback
from tests.support.app import fake_results, serving


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("access") / "results"
    fake_results(str(root))
    return root


@pytest.fixture(scope="module")
def server(results):
    with serving(results) as (url, app):
        yield url


def request(url, path, headers=None, method="GET", body=None, host=True):
    """``(status, headers, body)`` of one request, ``Host`` exactly as given in
    ``headers`` (none at all with ``host=False``)."""
    name, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(name, int(port), timeout=30)
    headers = dict(headers or {})
    conn.putrequest(method, path, skip_host=("Host" in headers or not host),
                    skip_accept_encoding=True)
    for k, v in headers.items():
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body.encode() if body is not None else None)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, r.headers, data


def test_loopback_names():
    for name in ("localhost", "LOCALHOST", "127.0.0.1", "127.8.9.10", "::1", "[::1]",
                 "localhost."):
        assert is_loopback(name), name
    for name in ("evil.example.com", "localhost.evil.com", "127.0.0.1.nip.io", "0.0.0.0",
                 "192.168.1.2", "::", "", "[::2]"):
        assert not is_loopback(name), name
    assert host_name("LocalHost:8000") == "localhost"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("evil.example.com") == "evil.example.com"


@pytest.mark.parametrize("host", [
    "evil.example.com", "evil.example.com:8000", "localhost.evil.com", "127.0.0.1.nip.io",
    "0.0.0.0", "192.168.1.2:8000", "[::2]:80", "", "localhost@evil.com"])
@pytest.mark.parametrize("path", ["/", "/api/dissections", "/api/units/0",
                                  "/files/gen/dissect/report.json"])
def test_foreign_host_headers_are_refused(server, host, path):
    status, headers, data = request(server, path, {"Host": host})
    assert status == 403, (host, path, status)
    assert b"gen/dissect" not in data and b"layer4" not in data
    assert b"is not an address of this server" in data
    if path.startswith("/api/"):
        assert "is not an address of this server" in json.loads(data)["error"]


def test_a_request_without_host_is_refused(server):
    assert request(server, "/api/dissections", host=False)[0] == 403


def test_loopback_host_headers_are_answered(server):
    port = server.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", "[::1]",
                 "localhost"):
        status, _, data = request(server, "/api/dissections", {"Host": host})
        assert status == 200, host
        assert json.loads(data)[0]["id"] == "gen/dissect"


def test_foreign_origins_are_refused(server):
    body = json.dumps({"seed": 1, "index": 0, "mode": "on", "concept": "tree", "mask": "1"})
    status, _, data = request(server, "/api/paint/0", {
        "Origin": "http://evil.example.com", "Content-Type": "application/json"},
        method="POST", body=body)
    assert status == 403 and "evil.example.com" in json.loads(data)["error"]
    status, _, _ = request(server, "/api/dissections", {"Origin": server})
    assert status == 200
    assert request(server, "/")[0] == 200           # and the server goes on


TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def token_server(results):
    """The app as ``serve --host 0.0.0.0 --token TOKEN`` makes it (listening on
    loopback here)."""
    with serving(results, host="0.0.0.0", token=TOKEN) as (url, app):
        yield url, app


def test_beyond_loopback_the_token_is_asked_for(token_server):
    url, app = token_server
    access = app.config["ACCESS"]
    for path in ("/", "/api/dissections", "/files/gen/dissect/report.json",
                 "/static/app.js", "/?token=wrong", "/?token="):
        status, _, data = request(url, path, {"Host": "lab-machine:8000"})
        assert status == 403, path
        assert b"gen/dissect" not in data and b"asks for its token" in data
    status, _, _ = request(url, "/", {"Host": "x", "Cookie": f"{access.cookie}=wrong"})
    assert status == 403
    status, _, _ = request(url, "/api/dissections", {"Authorization": "token wrong"})
    assert status == 403


def test_the_token_opens_the_app_and_is_kept_in_a_cookie(token_server):
    url, app = token_server
    access = app.config["ACCESS"]
    assert access.url_suffix() == f"?token={TOKEN}"
    status, headers, _ = request(url, f"/units/0?token={TOKEN}&x=1", {"Host": "lab:8000"})
    assert status == 303 and headers["Location"] == "/units/0?x=1"   # token dropped
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"{access.cookie}={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, _, data = request(url, "/units/0", {"Host": "lab:8000",
                                                "Cookie": f"{access.cookie}={TOKEN}"})
    assert status == 200 and b"layer4" in data
    status, _, data = request(url, "/api/dissections", {"Authorization": f"token {TOKEN}"})
    assert status == 200 and json.loads(data)[0]["id"] == "gen/dissect"


def test_beyond_loopback_without_a_token_is_refused():
    with pytest.raises(ValueError, match="needs a token"):
        Access("0.0.0.0", None)
    assert Access("127.0.0.1").url_suffix() == ""
