"""Saving and loading the experiments' typed results (``.npz``, atomic).

``save(path, result)`` writes a result dataclass: every NumPy array as an array of
its own (exact dtype and shape), everything else (numbers, strings, lists, nested
result dataclasses, a ``LabelSet``) as JSON metadata that refers to the arrays by
name. ``load(cls, path)`` rebuilds the same dataclass. Result classes register
themselves with ``@typed`` so that nested results come back as their class.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from jaxdissect.labels import LabelSet
from jaxdissect.runtime import cache

_TYPES: dict[str, type] = {}


def typed(cls):
    """Class decorator: a result dataclass that ``save`` / ``load`` can round-trip."""
    _TYPES[cls.__name__] = cls
    return cls


def _encode(obj, arrays: dict):
    if isinstance(obj, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = obj
        return {"__array__": name}
    if isinstance(obj, LabelSet):
        return {"__labels__": obj.to_json()}
    if dataclasses.is_dataclass(obj):
        return {"__result__": type(obj).__name__,
                **{f.name: _encode(getattr(obj, f.name), arrays)
                   for f in dataclasses.fields(obj)}}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__tuple__" if isinstance(obj, tuple) else "__list__":
                [_encode(v, arrays) for v in obj]}
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else {"__float__": repr(f)}
    return obj


def _decode(obj, arrays):
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
    name = obj["__result__"]
    if name not in _TYPES:
        raise ValueError(f"unknown result type {name!r} in a saved result")
    return _TYPES[name](**{k: _decode(v, arrays) for k, v in obj.items() if k != "__result__"})


def save(path: str, result) -> str:
    """Writes ``result`` (a ``@typed`` dataclass) to ``path`` atomically; returns it."""
    arrays: dict[str, np.ndarray] = {}
    meta = _encode(result, arrays)
    # save_tree stores a dict's leaves in sorted key order, as load reads them
    cache.save_tree(path, arrays, result=meta)
    return path


def load(cls, path: str):
    """The ``cls`` result saved at ``path``; a clear error if it holds another type."""
    with np.load(path, allow_pickle=False) as data:
        if "meta" not in data.files:
            raise ValueError(f"{path} is not a saved jaxdissect result")
        meta = json.loads(str(data["meta"])).get("result")
        if not isinstance(meta, dict) or meta.get("__result__") != cls.__name__:
            kind = meta.get("__result__") if isinstance(meta, dict) else None
            raise ValueError(f"{path} holds a {kind or 'different file'}, not a "
                             f"{cls.__name__}")
        names = sorted(_array_names(meta))
        arrays = {n: data[f"leaf{i}"] for i, n in enumerate(names)}
    return _decode(meta, arrays)


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
