"""Explicit conversion tables: Flax parameter path -> (source state-dict key, transform).

A table is a dict ``{"conv1_1/kernel": ("features.conv1_1.weight", "conv"), ...}``.
:func:`convert` applies it with a strict check: every source key must be
consumed, every target filled, every shape right; otherwise one error lists
missing keys with ``-``, unexpected keys with ``+`` and mis-shaped ones with ``!``.

Transforms (source arrays are in PyTorch layout):
  ``conv``   OIHW -> HWIO (Flax convolution kernels)
  ``copy``   unchanged: biases, and fully connected weights, which the models keep
             ``[out, in]`` as PyTorch does (see ``jaxdissect.models.vgg16.LinearOI``)
             so that large matrices convert without a copy
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

Table = dict[str, tuple[str, str]]


class CheckpointMismatch(ValueError):
    """A state dict does not fit the architecture; the message lists every problem."""


def source_shape(transform: str, target_shape: tuple) -> tuple:
    """The PyTorch-layout shape that ``transform`` maps onto ``target_shape``."""
    t = tuple(target_shape)
    if transform == "conv":
        return (t[3], t[2], t[0], t[1])
    if transform == "copy":
        return t
    raise ValueError(f"unknown transform {transform!r}")


def apply_transform(transform: str, w: np.ndarray) -> np.ndarray:
    """Map source array ``w`` (PyTorch layout) to Flax layout."""
    if transform == "conv":
        return np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    if transform == "copy":
        return np.asarray(w)
    raise ValueError(f"unknown transform {transform!r}")


def dim_of(state_dict: Mapping, key: str, axis: int, ndim: int) -> int:
    """``state_dict[key].shape[axis]``, after checking the entry has ``ndim`` dimensions:
    a 0-d or 1-d entry where a kernel belongs is a :class:`CheckpointMismatch` naming
    the key, not an ``IndexError``."""
    shape = tuple(getattr(state_dict[key], "shape", ()))
    if len(shape) != ndim:
        kind = {4: "a convolution kernel", 2: "a weight matrix"}.get(ndim, "an array")
        raise CheckpointMismatch(f"{key!r} has shape {list(shape)}, but {kind} there is "
                                 f"{ndim}-d")
    return int(shape[axis])


def flatten_params(tree: Mapping, prefix: str = "") -> dict:
    """Nested dict -> ``{"a/b/c": leaf}``."""
    flat = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten_params(v, path + "/"))
        else:
            flat[path] = v
    return flat


def unflatten_params(flat: Mapping) -> dict:
    """``{"a/b/c": leaf}`` -> nested dict."""
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def convert(state_dict: Mapping[str, np.ndarray], table: Table,
            target_shapes: Mapping[str, tuple], what: str = "checkpoint") -> dict:
    """Convert ``state_dict`` by ``table`` into a nested Flax params dict.

    ``target_shapes``: flat ``{"conv1_1/kernel": shape}`` the model expects (e.g.
    from ``jax.eval_shape`` of ``model.init``). Raises :class:`CheckpointMismatch`
    naming every missing (``-``), unexpected (``+``) and mis-shaped (``!``) key.
    """
    problems = []
    unmapped = sorted(set(target_shapes) - set(table))
    if unmapped:  # a defect of the table, not of the file
        raise ValueError(f"conversion table has no rule for {unmapped}")
    used = {src for src, _ in table.values()}
    for path in sorted(table):
        src, tf = table[path]
        if src not in state_dict:
            problems.append(f"  - {src} (for {path})")
            continue
        want = source_shape(tf, target_shapes[path])
        have = tuple(np.shape(state_dict[src]))
        if have != want:
            problems.append(f"  ! {src}: shape {list(have)} in the {what}, "
                            f"model needs {list(want)}")
    for src in sorted(set(state_dict) - used):
        problems.append(f"  + {src}")
    if problems:
        raise CheckpointMismatch(
            f"{what} does not match the architecture "
            f"(- missing, + unexpected, ! wrong shape):\n" + "\n".join(problems))
    flat = {path: apply_transform(tf, np.asarray(state_dict[src], np.float32))
            for path, (src, tf) in table.items()}
    return unflatten_params(flat)
