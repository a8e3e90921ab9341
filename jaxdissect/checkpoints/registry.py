"""The registry of published checkpoints, and fetching them into the cache.

The registry (``weights/registry.json``, shipped in the package as
``jaxdissect/checkpoints/registry.json``; ``JAXDISSECT_REGISTRY`` overrides the
path) maps a name such as ``vgg16_places365`` to the file on the reference's
model host, the SHA-256 prefix in its file name, and the jaxdissect
architecture that converts it.

Cache (``JAXDISSECT_CACHE``, default ``~/.cache/jaxdissect``)::

    downloads/<file>         verified downloads
    converted/<name>/        model.json + params/ (see jaxdissect.checkpoints.store)

A download goes to a ``.part`` file, is hashed while it streams and is moved into
place only when the hash prefix matches, so nothing is cached on a mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from jaxdissect.checkpoints.architectures import convert_state_dict
from jaxdissect.checkpoints.pth import load_state_dict
from jaxdissect.checkpoints.store import is_converted, load_converted, save_converted

_HERE = Path(__file__).resolve().parent
_CANDIDATES = (_HERE / "registry.json", _HERE.parents[1] / "weights" / "registry.json")


class HashMismatch(ValueError):
    """A downloaded file's SHA-256 does not start with the registry's prefix."""


def cache_dir() -> Path:
    """``$JAXDISSECT_CACHE`` or ``~/.cache/jaxdissect``."""
    return Path(os.environ.get("JAXDISSECT_CACHE") or Path.home() / ".cache" / "jaxdissect")


def registry_path() -> Path:
    env = os.environ.get("JAXDISSECT_REGISTRY")
    if env:
        return Path(env)
    for p in _CANDIDATES:
        if p.is_file():
            return p
    looked = [str(p) for p in _CANDIDATES]
    raise FileNotFoundError(f"no checkpoint registry found (looked at {looked})")


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


def download(url: str, dest: Path, sha256_prefix: str | None, progress: bool = True) -> Path:
    """Stream ``url`` to ``dest``, checking the SHA-256 prefix; ``dest`` exists only on
    success. Raises :class:`HashMismatch` or ``OSError`` (network)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.{os.getpid()}.part")  # one per process
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
            total = resp.headers.get("Content-Length")
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                      desc=dest.name, disable=not progress, file=sys.stderr) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
            if total is not None and out.tell() != int(total):
                raise OSError(f"download of {url} ended after {out.tell()} of {total} bytes")
        digest = h.hexdigest()
        if sha256_prefix and not digest.startswith(sha256_prefix.lower()):
            raise HashMismatch(f"{url}: SHA-256 {digest[:16]}... does not start with "
                               f"{sha256_prefix}; refusing the file, nothing cached")
        os.replace(part, dest)
    except urllib.error.URLError as e:
        raise OSError(f"cannot download {url}: {e.reason}") from None
    finally:
        if part.exists():
            part.unlink()
    return dest


def convert_file(pth_path, arch: str, out_dir, source: dict | None = None) -> Path:
    """Read ``pth_path`` safely, convert it as ``arch`` and save it to ``out_dir``.

    The conversion is written to a sibling temporary directory first and renamed,
    so ``out_dir`` never holds a half-written checkpoint."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose another --out")
    state = load_state_dict(pth_path)
    config, params = convert_state_dict(state, arch, what=Path(pth_path).name)
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
        converted = cache / "converted" / entry_name
        if entry.get("arch") and is_converted(converted):
            log(f"{entry_name}: cached at {converted}")
            results.append(converted)
            continue
        raw = cache / "downloads" / entry["file"]
        if not raw.is_file():
            log(f"{entry_name}: downloading {entry['url']}")
            download(entry["url"], raw, entry.get("sha256_prefix"), progress=progress)
            if entry.get("sha256_prefix"):
                log(f"{entry_name}: SHA-256 prefix {entry['sha256_prefix']} verified")
            else:
                log(f"{entry_name}: no published hash; file not verified")
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
