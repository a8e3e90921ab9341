"""The registry of published checkpoints, and fetching them into the cache.

The registry (``jaxdissect/checkpoints/registry.json``, shipped in the package;
``JAXDISSECT_REGISTRY`` overrides the path) maps a name such as ``vgg16_places365`` to
the file on the reference's model host, the SHA-256 prefix in its file name, and the
jaxdissect architecture that converts it.

Cache (``JAXDISSECT_CACHE``, default ``~/.cache/jaxdissect``)::

    downloads/<file>         verified downloads
    converted/<name>/        model.json + params/ (see jaxdissect.checkpoints.store)

A download goes to a ``.part`` file, is hashed while it streams and is moved into
place only when it is shown complete: its hash prefix matches, or, for a file without
a published hash, its length equals the server's declared length or the registry's
``size``. Stalled and dropped connections, HTTP errors and mismatches leave nothing
in the cache. Registry names and file names cannot leave the cache folder.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from jaxdissect.checkpoints.architectures import convert_state_dict, detect_architecture
from jaxdissect.checkpoints.files import read_state_dict
from jaxdissect.checkpoints.store import is_converted, load_converted, save_converted

_HERE = Path(__file__).resolve().parent
REGISTRY = _HERE / "registry.json"


class HashMismatch(ValueError):
    """A downloaded file's SHA-256 does not start with the registry's prefix."""


def cache_dir() -> Path:
    """``$JAXDISSECT_CACHE`` or ``~/.cache/jaxdissect``."""
    return Path(os.environ.get("JAXDISSECT_CACHE") or Path.home() / ".cache" / "jaxdissect")


def registry_path() -> Path:
    env = os.environ.get("JAXDISSECT_REGISTRY")
    if env:
        return Path(env)
    if not REGISTRY.is_file():
        raise FileNotFoundError(f"no checkpoint registry found at {REGISTRY}")
    return REGISTRY


def load_registry(path=None) -> dict:
    """``{"base_url": ..., "checkpoints": {name: entry}}`` with ``entry["url"]`` filled."""
    path = Path(path) if path else registry_path()
    reg = json.loads(path.read_text())
    base = reg.get("base_url", "")
    for entry in reg["checkpoints"].values():
        entry.setdefault("url", base + entry["file"])
    return reg


def resolve(name: str, registry: dict) -> list[str]:
    """Entry names for ``name``: an entry, or a group (e.g. ``segmenter_upp``)."""
    entries = registry["checkpoints"]
    if name in entries:
        return [name]
    group = [n for n, e in entries.items() if e.get("group") == name]
    if group:
        return group
    groups = sorted({e["group"] for e in entries.values() if e.get("group")})
    raise KeyError(f"unknown checkpoint {name!r}; known: {sorted(entries)}; groups: {groups}")


def sha256_file(path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


READ_TIMEOUT = 60.0     # seconds a download may wait for its next bytes
DEADLINE = 4 * 3600.0   # seconds a whole file may take


class DownloadError(OSError):
    """A download that failed or could not be shown complete; nothing was cached."""


def _safe_relative(name: str, what: str) -> Path:
    """``name`` as a relative path that stays inside the folder it is joined to."""
    parts = name.replace("\\", "/").split("/") if isinstance(name, str) else [""]
    if any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
        raise ValueError(f"registry {what} {name!r} would leave the cache folder")
    return Path(*parts)


def download(url: str, dest: Path, sha256_prefix: str | None, progress: bool = True,
             size: int | None = None, read_timeout: float | None = None,
             deadline: float | None = None) -> Path:
    """Stream ``url`` to ``dest``; ``dest`` exists only if the file is shown complete:
    its SHA-256 starts with ``sha256_prefix``, or (no published hash) its length equals
    the server's ``Content-Length`` or the registry's ``size``. Waits at most
    ``read_timeout`` (default :data:`READ_TIMEOUT`) for each read and ``deadline``
    (default :data:`DEADLINE`) seconds in all. Raises :class:`HashMismatch` or
    :class:`DownloadError`, one line naming the host and the bytes received; the
    partial file is removed."""
    read_timeout = READ_TIMEOUT if read_timeout is None else read_timeout
    deadline = DEADLINE if deadline is None else deadline
    host = urllib.parse.urlsplit(url).netloc or url
    name = dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.{os.getpid()}.part")  # one per process
    h = hashlib.sha256()
    got, declared = 0, None

    def fail(why: str):
        of = f" of {declared}" if declared is not None else ""
        raise DownloadError(f"{host}: {why} ({got}{of} bytes of {name} received); "
                            f"nothing cached") from None

    start = time.monotonic()
    try:
        try:
            resp = urllib.request.urlopen(url, timeout=read_timeout)
        except urllib.error.HTTPError as e:
            fail(f"HTTP {e.code} {e.reason}")
        except urllib.error.URLError as e:
            fail(f"cannot connect: {e.reason}")
        except (TimeoutError, socket.timeout):
            fail(f"no response within {read_timeout:g} s")
        except (http.client.HTTPException, ConnectionError) as e:
            fail(f"connection failed: {type(e).__name__}")
        with resp, open(part, "wb") as out:
            length = resp.headers.get("Content-Length")
            declared = int(length) if length and length.isdigit() else None
            read = getattr(resp, "read1", resp.read)  # one socket read at a time
            with tqdm(total=declared, unit="B", unit_scale=True, desc=name,
                      disable=not progress, file=sys.stderr) as bar:
                while True:
                    if time.monotonic() - start > deadline:
                        fail(f"download not finished after {deadline:g} s")
                    try:
                        block = read(1 << 16)
                    except (TimeoutError, socket.timeout):
                        fail(f"no data for {read_timeout:g} s")
                    except (http.client.HTTPException, ConnectionError) as e:
                        fail(f"connection dropped ({type(e).__name__})")
                    if not block:
                        break
                    out.write(block)
                    h.update(block)
                    got += len(block)
                    bar.update(len(block))
        if declared is not None and got != declared:
            fail("connection dropped before the declared length")
        if size is not None and got != size:
            fail(f"length differs from the {size} bytes the registry records")
        digest = h.hexdigest()
        if sha256_prefix and not digest.startswith(sha256_prefix.lower()):
            raise HashMismatch(f"{url}: SHA-256 {digest[:16]}... does not start with "
                               f"{sha256_prefix}; refusing the file, nothing cached")
        if not sha256_prefix and declared is None and size is None:
            fail("no published hash and no declared length: cannot tell the file is "
                 "complete")
        os.replace(part, dest)
    finally:
        if part.exists():
            part.unlink()
    return dest


def convert_file(pth_path, arch: str | None, out_dir, source: dict | None = None) -> Path:
    """Read ``pth_path`` (``.pth`` or ``.safetensors``) safely, convert it as ``arch``
    (None: the architecture its keys identify) and save it to ``out_dir``.

    The conversion is written to a sibling temporary directory first and renamed,
    so ``out_dir`` never holds a half-written checkpoint."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose another --out")
    state = read_state_dict(pth_path)
    what = Path(pth_path).name
    arch = arch or detect_architecture(state, what)
    config, params = convert_state_dict(state, arch, what=what)
    tmp = out_dir.with_name(f"{out_dir.name}.{os.getpid()}.converting")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        save_converted(tmp, arch, config, params, source={"file": Path(pth_path).name,
                                                          **(source or {})})
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def fetch(name: str, registry: dict | None = None, cache: Path | None = None,
          progress: bool = True, log=print) -> list[Path]:
    """Download, verify, convert and cache ``name`` (an entry or a group).

    Returns, per entry, the converted directory (entries with an ``arch``) or the
    verified downloaded file."""
    registry = registry or load_registry()
    cache = Path(cache) if cache else cache_dir()
    results = []
    for entry_name in resolve(name, registry):
        entry = registry["checkpoints"][entry_name]
        converted = cache / "converted" / _safe_relative(entry_name, "entry name")
        if entry.get("arch") and is_converted(converted):
            log(f"{entry_name}: cached at {converted}")
            results.append(converted)
            continue
        raw = cache / "downloads" / _safe_relative(entry["file"], "file name")
        if not raw.is_file():
            log(f"{entry_name}: downloading {entry['url']}")
            download(entry["url"], raw, entry.get("sha256_prefix"), progress=progress,
                     size=entry.get("size"))
            if entry.get("sha256_prefix"):
                log(f"{entry_name}: SHA-256 prefix {entry['sha256_prefix']} verified")
            else:
                log(f"{entry_name}: no published hash; length {raw.stat().st_size} bytes "
                    f"as declared")
        if not entry.get("arch"):
            log(f"{entry_name}: no jaxdissect converter; file kept at {raw}")
            results.append(raw)
            continue
        convert_file(raw, entry["arch"], converted,
                     source={"name": entry_name, "url": entry["url"],
                             "sha256_prefix": entry.get("sha256_prefix")})
        log(f"{entry_name}: converted to {converted}")
        results.append(converted)
    return results


def load_pretrained(name: str, **fetch_kwargs):
    """``(model, params)`` for a convertible registry entry, fetching it if needed."""
    (path,) = fetch(name, **fetch_kwargs)
    if not path.is_dir():
        raise ValueError(f"{name!r} has no jaxdissect converter; downloaded file is {path}")
    model, params, _ = load_converted(path)
    return model, params


def listing() -> list[str]:
    """``jaxdissect weights list``: the registry's checkpoints (``*`` where cached) and
    the registered architectures, one line each."""
    from jaxdissect.checkpoints.architectures import architectures
    cache = cache_dir()
    lines = [f"cache: {cache}"]
    for name, e in load_registry()["checkpoints"].items():
        done = (cache / "converted" / name / "model.json").is_file() or (
            not e.get("arch") and (cache / "downloads" / e["file"]).is_file())
        lines.append(f"{'*' if done else ' '} {name:26s} {e.get('arch') or '-':8s} "
                     f"{e['what']}")
    lines += ["(* = cached)", "architectures (--arch):"]
    lines += [f"  {name:10s} {a.what}" for name, a in architectures().items()]
    return lines
