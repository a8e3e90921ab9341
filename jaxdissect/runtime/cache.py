"""Argument-keyed, resumable caches of statistic pytrees as ``.npz`` files.

``args_key`` hashes the arguments that made a result; ``save_tree`` writes a
pytree's leaves (plus small metadata) to a temporary file in the same directory
and ``os.replace``-s it into place, so a killed process leaves either the old
file or the new one, never a torn one. ``load_tree`` restores the leaves into a
template pytree of the same structure and checks every shape and dtype.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any

import jax
import numpy as np


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return {"ndarray": hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest(),
                "shape": list(obj.shape), "dtype": str(obj.dtype)}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return repr(obj)


def args_key(*args: Any) -> str:
    """A 16-hex-digit digest of JSON-able arguments (arrays hashed by content)."""
    text = json.dumps(args, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_tree(path: str, tree: Any, **meta: Any) -> None:
    """Atomically writes ``tree``'s leaves and JSON metadata ``meta`` to ``path``."""
    leaves = jax.tree_util.tree_leaves(tree)
    arrays = {f"leaf{i}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True, default=_jsonable))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_tree(path: str, template: Any) -> tuple[Any, dict] | None:
    """``(tree, meta)`` from ``path`` shaped like ``template``, or None if absent.
    Raises ValueError naming the file if its contents do not fit the template."""
    if not os.path.exists(path):
        return None
    leaves, treedef = jax.tree_util.tree_flatten(template)
    with np.load(path, allow_pickle=False) as data:
        names = [f"leaf{i}" for i in range(len(leaves))]
        if set(data.files) != set(names) | {"meta"}:
            raise ValueError(f"cache file {path} holds a different structure; delete it or "
                             "change the cache key")
        loaded = [data[n] for n in names]
        meta = json.loads(str(data["meta"]))
    for want, got in zip(leaves, loaded):
        if np.shape(want) != got.shape or np.asarray(want).dtype != got.dtype:
            raise ValueError(f"cache file {path} holds {got.shape} {got.dtype} where "
                             f"{np.shape(want)} {np.asarray(want).dtype} is expected; delete "
                             "it or change the cache key")
    return jax.tree_util.tree_unflatten(treedef, loaded), meta
