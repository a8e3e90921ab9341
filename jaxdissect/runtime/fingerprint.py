"""Content fingerprints: what a cached result was made from, by its bytes.

``fingerprint(tree)`` hashes a pytree of arrays (model weights) by its structure
(every leaf's key path), each leaf's dtype and shape, and its bytes, so two weight
sets share a fingerprint only if they are equal bit for bit, whatever their names.
``data_identity(source)`` is the data's part of a cache key: ``source.identity()``
when the source has one (every source in ``jaxdissect.data`` and the world does).
"""

from __future__ import annotations

import hashlib
import warnings
import weakref
from typing import Any

import jax
import numpy as np

#: fingerprints of immutable (JAX) leaves, by id, checked with a weak reference
_MEMO: dict[int, tuple[weakref.ref, str]] = {}


def _leaf_digest(leaf) -> str:
    """sha256 of one leaf's dtype, shape and bytes; JAX arrays (immutable) are
    hashed once per object."""
    memo = isinstance(leaf, jax.Array)
    if memo:
        hit = _MEMO.get(id(leaf))
        if hit is not None and hit[0]() is leaf:
            return hit[1]
    kind, data = "", leaf
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
        # a typed PRNG key (NNX RNG state) has no NumPy dtype: hash its key data and
        # its implementation
        kind, data = f"key<{jax.random.key_impl(leaf)}>", jax.random.key_data(leaf)
    a = np.ascontiguousarray(np.asarray(data))
    h = hashlib.sha256(f"{kind}{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    digest = h.hexdigest()
    if memo:
        ident = id(leaf)  # an id is reused only after its object is gone
        _MEMO[ident] = (weakref.ref(leaf, lambda _, i=ident: _MEMO.pop(i, None)), digest)
    return digest


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def fingerprint(tree: Any, arrays_only: bool = False) -> str:
    """A 32-hex-digit sha256 of a pytree's key paths, leaf dtypes, shapes and bytes.

    Equal for bit-identical weights; different when any value, shape, dtype or
    name differs. Non-array leaves (Python scalars) are hashed by ``repr``, or
    skipped with ``arrays_only`` (e.g. ``fingerprint(vars(obj), arrays_only=True)``:
    the weights an object holds, whatever else it refers to). A JAX array is read
    once per object (they are immutable); NumPy leaves every call.
    """
    h = hashlib.sha256()
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    if arrays_only:
        leaves = [(p, x) for p, x in leaves if _is_array(x)]
    else:
        h.update(str(treedef).encode())
    for path, leaf in leaves:
        h.update(jax.tree_util.keystr(path).encode())
        if _is_array(leaf):
            h.update(_leaf_digest(leaf).encode())
        else:
            h.update(repr(leaf).encode())
    return h.hexdigest()[:32]


def data_identity(source: Any) -> dict:
    """The data's part of a cache key: ``source.identity()`` (description, count,
    seed, preprocessing), or, for a source without one, its type, size and a hash
    of its first and last examples (with a warning: other changes go unseen)."""
    if hasattr(source, "identity"):
        return dict(source.identity())
    n = int(source.num_examples)
    warnings.warn(f"{type(source).__name__} has no identity(); its cache key uses its type, "
                  "size and first and last examples only", stacklevel=3)
    ends = [source.batch(0, min(n, 1)), source.batch(max(n - 1, 0), n)]
    return {"type": f"{type(source).__module__}.{type(source).__qualname__}",
            "num_examples": n, "ends": fingerprint(ends)}


def module_settings(module: Any) -> dict:
    """A model module's class and scalar settings (its code's part of an identity)."""
    fields = getattr(module, "__dataclass_fields__", {})
    simple = (int, float, str, bool, type(None))
    return {"class": f"{type(module).__module__}.{type(module).__qualname__}",
            **{k: getattr(module, k) for k in sorted(fields)
               if k not in ("parent", "name") and isinstance(getattr(module, k), simple)}}


def model_identity(model: Any) -> dict:
    """A model's part of a run's identity: a ``ModelSpec``'s name, kind, module settings
    and weights' fingerprint; any other object (a weights pytree) by its fingerprint."""
    if hasattr(model, "params") and hasattr(model, "kind"):
        return {"name": model.name, "kind": model.kind,
                "module": module_settings(model.module), "weights": fingerprint(model.params)}
    return {"weights": fingerprint(model)}


def segmenter_identity(segmenter: Any) -> Any:
    """A segmenter's part of a run's identity: a name (``"truth"``: the data's own
    annotation) as it is, an object by its type, labels and the weights it holds."""
    if segmenter is None or isinstance(segmenter, str):
        return segmenter
    labels = getattr(segmenter, "labels", None)
    names = getattr(labels, "names", labels)
    return {"type": f"{type(segmenter).__module__}.{type(segmenter).__qualname__}",
            "labels": None if names is None else [str(n) for n in names],
            "categories": [str(c) for c in getattr(labels, "categories", ()) or ()],
            "weights": fingerprint(vars(segmenter) if hasattr(segmenter, "__dict__") else {},
                                   arrays_only=True)}
