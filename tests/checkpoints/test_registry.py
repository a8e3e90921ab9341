"""Downloads that cannot lie, against a loopback HTTP server written here: a file
without a published hash is kept only when its length matches the server's declared
length or the registry's; a dropped connection, a stalled or dripping server and HTTP
errors give one line naming the host and the bytes received, and leave nothing in the
cache; registry names cannot leave the cache folder."""

import hashlib
import http.server
import json
import threading
import time

import pytest

from jaxdissect.checkpoints import registry
from jaxdissect.cli import main

BODY = bytes(range(256)) * 40  # 10240 bytes


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _head(self, length=None, code=200):
        self.send_response(code)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def do_GET(self):  # noqa: N802 - http.server's name
        path = self.path.lstrip("/")
        try:
            if path == "ok.bin":
                self._head(len(BODY))
                self.wfile.write(BODY)
            elif path == "nolength.bin":  # HTTP/1.0: the body ends when the server closes
                self._head()
                self.wfile.write(BODY)
            elif path == "drop.bin":  # declares the whole file, sends 3000 bytes, closes
                self._head(len(BODY))
                self.wfile.write(BODY[:3000])
            elif path == "stall.bin":  # 1000 bytes, then silence
                self._head(len(BODY))
                self.wfile.write(BODY[:1000])
                self.wfile.flush()
                time.sleep(3)
            elif path == "drip.bin":  # a byte every 50 ms: no read ever times out
                self._head(len(BODY))
                for i in range(len(BODY)):
                    self.wfile.write(BODY[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.05)
            elif path == "error.bin":
                self._head(0, code=500)
            else:
                self._head(0, code=404)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def env(server, tmp_path, monkeypatch):
    digest = hashlib.sha256(BODY).hexdigest()

    def entry(file, **kw):
        return {"file": file, "what": "test", **kw}

    reg = {"base_url": f"http://{server}/", "checkpoints": {
        "hashed": entry("ok.bin", sha256_prefix=digest[:8]),
        "declared": entry("ok.bin"),
        "nolength": entry("nolength.bin"),
        "nolength_sized": entry("nolength.bin", size=len(BODY)),
        "nolength_wrong_size": entry("nolength.bin", size=len(BODY) + 1),
        "drop": entry("drop.bin"),
        "drop_hashed": entry("drop.bin", sha256_prefix=digest[:8]),
        "stall": entry("stall.bin"),
        "drip": entry("drip.bin"),
        "error": entry("error.bin"),
        "missing": entry("missing.bin"),
        "escape_file": entry("../../outside.bin"),
        "escape_abs": entry(str(tmp_path / "abs.bin")),
        "../escape_name": entry("ok.bin", arch="vgg16"),
    }}
    (tmp_path / "registry.json").write_text(json.dumps(reg))
    monkeypatch.setenv("JAXDISSECT_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("JAXDISSECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "READ_TIMEOUT", 0.5)
    monkeypatch.setattr(registry, "DEADLINE", 1.5)
    return tmp_path


def fetch(name, capsys):
    code = main(["weights", "fetch", name, "--no-progress"])
    return code, capsys.readouterr()


def leftovers(tmp_path):
    return sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                  if p.is_file() and p.name != "registry.json")


@pytest.mark.parametrize("name", ["hashed", "declared", "nolength_sized"])
def test_complete_files_are_kept(env, capsys, name):
    code, out = fetch(name, capsys)
    assert code == 0, out.err
    kept = env / "cache" / "downloads" / registry.load_registry()["checkpoints"][name]["file"]
    assert kept.read_bytes() == BODY
    assert leftovers(env) == [kept.relative_to(env).as_posix()]


@pytest.mark.parametrize("name, says, received", [
    ("nolength", "no published hash and no declared length", "10240 bytes"),
    ("nolength_wrong_size", "10241 bytes the registry records", "10240 bytes"),
    ("drop", "connection dropped", "3000 of 10240 bytes"),
    ("drop_hashed", "connection dropped", "3000 of 10240 bytes"),
    ("stall", "no data for 0.5 s", "1000 of 10240 bytes"),
    ("drip", "not finished after 1.5 s", " of 10240 bytes"),
    ("error", "HTTP 500", "(0 bytes"),
    ("missing", "HTTP 404", "(0 bytes"),
])
def test_failures_name_host_and_bytes_and_leave_nothing(env, server, capsys, name, says,
                                                        received):
    t = time.monotonic()
    code, out = fetch(name, capsys)
    assert time.monotonic() - t < 5
    assert code == 2
    lines = out.err.strip().splitlines()  # progress log lines, then the error
    err = lines[-1]
    assert err.startswith("jaxdissect weights: error: ") and len(
        [x for x in lines if "error:" in x and "downloading" not in x]) == 1, out.err
    assert server in err and says in err and received in err, err
    assert "nothing cached" in err
    assert leftovers(env) == []


@pytest.mark.parametrize("name", ["escape_file", "escape_abs", "../escape_name"])
def test_registry_names_cannot_leave_the_cache(env, capsys, name):
    code, out = fetch(name, capsys)
    assert code == 2 and "would leave the cache folder" in out.err
    assert out.err.strip().startswith("jaxdissect weights: error:")
    assert "\n" not in out.err.strip()
    assert leftovers(env) == [] and not (env / "outside.bin").exists()
    assert not (env.parent / "outside.bin").exists()
