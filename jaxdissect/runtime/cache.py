"""Content-keyed caches of statistic pytrees, and the one atomic write path.

``content_key(...)`` hashes everything a result was made from: pass the weights'
fingerprint (``runtime.fingerprint.fingerprint(params)``, ``spec.fingerprint``),
the data's identity (``fingerprint.data_identity(source)``) and every setting that
changes a number; arrays are hashed by their bytes. Files are named by their key,
so two runs with different inputs never share or overwrite a file.

``atomic_write(path, write)`` is the only way results reach disk: ``write(f)``
fills a temporary file in the same folder (``.NAME.tmp-PID-RANDOM``), which is
fsync-ed, renamed over ``path`` and the folder fsync-ed; a killed write leaves the
old file (or none), never a torn one. Its stale temporaries are removed the next
time ``path`` is written or read (``clean_stale``); each file has one writer (one
process, see ``runtime.sweep``), so a temporary seen then is a dead one.

``save_tree`` / ``load_tree`` store a pytree's leaves by their key paths plus JSON
metadata in the one file format of results and caches (``runtime.treefile``);
``load_tree`` checks every name, shape and dtype against a template.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import secrets
from typing import Any, Callable

import jax
import numpy as np


def _jsonable(obj):
    if isinstance(obj, (np.ndarray, jax.Array)):
        a = np.ascontiguousarray(np.asarray(obj))
        return {"ndarray": hashlib.sha256(a.tobytes()).hexdigest(),
                "shape": list(a.shape), "dtype": str(a.dtype)}
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if hasattr(obj, "to_json"):
        return obj.to_json()
    if dataclass_fields := getattr(obj, "__dataclass_fields__", None):
        return {"type": type(obj).__qualname__,
                **{k: getattr(obj, k) for k in dataclass_fields}}
    return repr(obj)


def content_key(*parts: Any, **named: Any) -> str:
    """A 16-hex-digit sha256 of JSON-able ``parts`` and ``named`` settings (arrays by
    their bytes, dataclasses by their fields, objects with ``to_json`` by it).
    Equal inputs give equal keys in any process and any run."""
    text = json.dumps([parts, named], sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _temp_prefix(path: str) -> str:
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.tmp-")


def clean_stale(path: str) -> list[str]:
    """Removes temporaries left by killed writes of ``path``; returns their paths."""
    stale = glob.glob(glob.escape(_temp_prefix(path)) + "*")
    for tmp in stale:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return stale


def atomic_write(path: str, write: Callable[[Any], None], mode: str = "wb") -> str:
    """Writes ``path`` through ``write(file)`` atomically (temporary file in the same
    folder, fsync, rename, fsync of the folder). Returns ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    clean_stale(path)
    tmp = f"{_temp_prefix(path)}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # the rename itself survives a crash only once the folder is on disk
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # folders cannot be opened on some systems
        return path
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


def write_text(path: str, text: str) -> str:
    """Writes UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def save_tree(path: str, tree: Any, **meta: Any) -> None:
    """Atomically writes ``tree``'s leaves, named by their key paths, and JSON metadata
    ``meta`` to ``path`` (``runtime.treefile``, kind ``"tree"``)."""
    from jaxdissect.runtime import treefile
    meta = json.loads(json.dumps(meta, sort_keys=True, default=_jsonable))
    treefile.write(path, treefile.tree_arrays(tree), kind="tree", meta=meta)


def load_tree(path: str, template: Any) -> tuple[Any, dict] | None:
    """``(tree, meta)`` from ``path`` shaped like ``template``, or None if absent.
    Raises ``treefile.FormatError`` for a file in another format and ValueError
    naming the file if its contents do not fit the template."""
    from jaxdissect.runtime import treefile
    clean_stale(path)
    if not os.path.exists(path):
        return None
    arrays, meta, _ = treefile.read(path, kind="tree")
    return treefile.tree_from_arrays(template, arrays, path), meta


class RunCache:
    """A folder of sweep checkpoints and the identity of the complete run they belong to.

    Made only by :func:`run_cache` (the pipeline's ``Workspace.cache``) from the run
    itself: the model (its name, code's settings and weights' fingerprint), the layer,
    the data's identity, the segmenter's identity and weights, and every setting. The
    experiments key each sweep by ``key(...)`` (this identity plus the sweep's own
    settings), so two runs that differ in anything never share a file.
    """

    __slots__ = ("folder", "identity")

    def __init__(self, folder: str, identity: str, _token: object = None):
        if _token is not _MADE_BY_RUN_CACHE:
            raise TypeError("a RunCache is made by runtime.cache.run_cache (or the pipeline's "
                            "Workspace.cache) from the complete run")
        self.folder, self.identity = folder, identity

    def key(self, *parts: Any, **settings: Any) -> str:
        """A content key: this run's identity, ``parts`` and ``settings``."""
        return content_key(self.identity, *parts, **settings)

    def __repr__(self) -> str:
        return f"RunCache({self.folder!r}, {self.identity})"


_MADE_BY_RUN_CACHE = object()


def run_cache(folder: str, *, model: Any, layer: str, data: Any, segmenter: Any,
              **settings: Any) -> RunCache:
    """The cache of one complete run under ``folder``. ``model``: a ``ModelSpec`` (or a
    weights pytree); ``data``: the source (its ``identity()``); ``segmenter``: a
    segmenter object (its type, labels and weights) or a name such as ``"truth"``
    (the data's own annotation, part of the data's identity); ``settings``: every
    other choice that changes a number (seeds, sizes, quantiles, upsampling, ...).
    ``data`` may be a dict of sources (``{"train": ..., "val": ...}``)."""
    from jaxdissect.runtime.fingerprint import data_identity, model_identity, segmenter_identity
    data = ({k: data_identity(v) for k, v in data.items()} if isinstance(data, dict)
            else data_identity(data))
    identity = content_key(model=model_identity(model), layer=layer,
                           data=data, segmenter=segmenter_identity(segmenter),
                           settings=settings)
    return RunCache(folder, identity, _MADE_BY_RUN_CACHE)
