"""Saving and loading the experiments' typed results (``runtime.treefile``, atomic).

``save(path, result)`` writes a result dataclass in the one file format of results
and caches: every NumPy array as an array of its own (exact dtype and shape), named
by its field path (``"thresholds"``, ``"levels/0.01"``, ``"by_class/3/values"``),
everything else (numbers, strings, lists, nested result dataclasses, a ``LabelSet``)
as JSON metadata that refers to the arrays by those names; the file's kind is the
result's class name. ``load(cls, path)`` rebuilds the same dataclass, reading every
array by its name. Result classes register themselves with ``@typed`` so that nested
results come back as their class.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxdissect.labels import LabelSet
from jaxdissect.runtime import treefile

_TYPES: dict[str, type] = {}


def typed(cls):
    """Class decorator: a result dataclass that ``save`` / ``load`` can round-trip."""
    _TYPES[cls.__name__] = cls
    return cls


def _encode(obj, arrays: dict, path: str):
    def inner(name, value):
        return _encode(value, arrays, f"{path}/{name}" if path else str(name))

    if isinstance(obj, np.ndarray):
        if path in arrays or not path:
            raise ValueError(f"two arrays of a result share the name {path!r}")
        arrays[path] = obj
        return {"__array__": path}
    if isinstance(obj, LabelSet):
        return {"__labels__": obj.to_json()}
    if dataclasses.is_dataclass(obj):
        return {"__result__": type(obj).__name__,
                **{f.name: inner(f.name, getattr(obj, f.name))
                   for f in dataclasses.fields(obj)}}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, arrays, ""), inner(k, v)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__tuple__" if isinstance(obj, tuple) else "__list__":
                [inner(i, v) for i, v in enumerate(obj)]}
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else {"__float__": repr(f)}
    return obj


def _decode(obj, arrays):
    if isinstance(obj, list):
        raise ValueError("a saved result holds a bare list")
    if not isinstance(obj, dict):
        return obj
    if "__array__" in obj:
        return arrays[obj["__array__"]]
    if "__labels__" in obj:
        return LabelSet.from_json(obj["__labels__"])
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__list__" in obj:
        return [_decode(v, arrays) for v in obj["__list__"]]
    if "__tuple__" in obj:
        return tuple(_decode(v, arrays) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {_decode(k, arrays): _decode(v, arrays) for k, v in obj["__dict__"]}
    name = obj.get("__result__")
    if name not in _TYPES:
        raise ValueError(f"unknown result type {name!r} in a saved result")
    fields = {f.name for f in dataclasses.fields(_TYPES[name])}
    values = {k: v for k, v in obj.items() if k != "__result__"}
    if not set(values) <= fields:
        raise ValueError(f"a saved {name} has fields {sorted(set(values) - fields)} that a "
                         f"{name} does not have")
    return _TYPES[name](**{k: _decode(v, arrays) for k, v in values.items()})


def save(path: str, result) -> str:
    """Writes ``result`` (a ``@typed`` dataclass) to ``path`` atomically; returns it."""
    arrays: dict[str, np.ndarray] = {}
    meta = _encode(result, arrays, "")
    return treefile.write(path, arrays, kind=type(result).__name__, meta=meta)


def load(cls, path: str):
    """The ``cls`` result saved at ``path``; a clear ``ValueError`` if the file holds
    another type, is in another format or is damaged."""
    arrays, meta, _ = treefile.read(path, kind=cls.__name__)
    names = set(_array_names(meta))
    if names != set(arrays):
        raise ValueError(f"{path}: its arrays are not the ones its result refers to")
    try:
        return _decode(meta, arrays)
    except (TypeError, KeyError, AttributeError, RecursionError) as e:
        raise ValueError(f"{path} does not hold a well-formed {cls.__name__} ({e})") from None


def _array_names(obj):
    if isinstance(obj, dict):
        if "__array__" in obj:
            yield obj["__array__"]
        for v in obj.values():
            yield from _array_names(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _array_names(v)


class Saved:
    """``save(path)`` / ``load(path)`` for a ``@typed`` result dataclass."""

    def save(self, path: str) -> str:
        """Writes this result to ``path`` (``.npz``) atomically; returns the path."""
        return save(path, self)

    @classmethod
    def load(cls, path: str):
        """The result saved at ``path`` by ``save``."""
        return load(cls, path)


def jsonable(obj):
    """Arrays as (nested) lists, NaN/inf as None, nested results via their
    ``to_json``: what a page's ``.json`` file holds."""
    if hasattr(obj, "to_json") and not isinstance(obj, type):
        return jsonable(obj.to_json())
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj
