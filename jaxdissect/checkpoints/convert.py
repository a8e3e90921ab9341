"""The machinery every architecture's state-dict conversion shares.

A table maps each Flax variable path to its source key and a transform:
``{"params/conv1_1/kernel": ("features.conv1_1.weight", "conv"), ...}``.
:func:`convert` applies it with a strict check: every source key must be
consumed, every target filled, every shape right; otherwise one error lists
missing keys with ``-``, unexpected keys with ``+`` and mis-shaped ones with ``!``.

The Flax models mirror the PyTorch module trees, so a table is a naming rule applied
to every variable the model creates (:func:`torch_name_table`, over the shapes
:func:`variable_shapes` traces): ``/`` becomes ``.``, and each leaf gets the PyTorch
name of the same tensor (:data:`LEAF_RULES`); an architecture whose modules are named
differently renames the module part. :func:`prepare` undoes what wraps a state dict
whatever the architecture: a ``state_dict`` entry, the ``module.`` prefix of
``DataParallel`` files, BatchNorm's ``num_batches_tracked`` counters.

Transforms (source arrays are in PyTorch layout):
  ``conv``   OIHW -> HWIO (Flax convolution kernels)
  ``copy``   unchanged: biases, and fully connected weights, which the models keep
             ``[out, in]`` as PyTorch does (see ``jaxdissect.models.vgg16.LinearOI``)
             so that large matrices convert without a copy
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

import numpy as np

Table = dict[str, tuple[str, str]]

#: Flax leaf name -> (PyTorch leaf name, transform).
LEAF_RULES = {
    "kernel": ("weight", "conv"),      # convolutions only: dense layers use "weight"
    "weight": ("weight", "copy"),      # LinearOI, [out, in] as PyTorch
    "bias": ("bias", "copy"),
    "scale": ("weight", "copy"),       # BatchNorm / LayerNorm
    "mean": ("running_mean", "copy"),
    "var": ("running_var", "copy"),
    "class_token": ("class_token", "copy"),
    "pos_embedding": ("pos_embedding", "copy"),
    "in_proj_weight": ("in_proj_weight", "copy"),
    "in_proj_bias": ("in_proj_bias", "copy"),
}


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


def variable_shapes(model, x_shape: tuple) -> dict:
    """Flat ``{"params/conv1/kernel": shape, "batch_stats/bn1/mean": shape}`` of the
    variables ``model`` creates for an input of ``x_shape`` (abstract trace: nothing is
    computed)."""
    import jax
    import jax.numpy as jnp
    tree = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(x_shape, jnp.float32))
    return {k: tuple(v.shape) for k, v in flatten_params(tree).items()}


def torch_name_table(shapes: Mapping[str, tuple],
                     rename: Callable[[str], str] = lambda module: module,
                     leaves: Mapping[str, tuple[str, str]] = LEAF_RULES) -> Table:
    """Variable path -> (PyTorch key, transform) for every path in ``shapes`` (collection
    first). ``rename`` maps the module part (``layer1.0.conv1``) to the state dict's;
    ``leaves`` names each leaf (default :data:`LEAF_RULES`)."""
    table: Table = {}
    for path in shapes:
        _collection, *modules, leaf = path.split("/")
        if leaf not in leaves:
            raise ValueError(f"no PyTorch name for variable {path!r}")
        torch_leaf, transform = leaves[leaf]
        module = rename(".".join(modules))
        table[path] = (f"{module}.{torch_leaf}" if module else torch_leaf, transform)
    return table


def strip_module_prefix(state_dict: Mapping) -> dict:
    """Drop ``module.`` from every key when every key has it (``DataParallel`` files)."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def drop_batch_counters(state_dict: Mapping) -> dict:
    """Remove ``X.num_batches_tracked`` where ``X.running_mean`` exists."""
    return {k: v for k, v in state_dict.items()
            if not (k.endswith(".num_batches_tracked")
                    and k[: -len("num_batches_tracked")] + "running_mean" in state_dict)}


def prepare(state_dict: Mapping) -> dict:
    """A state dict as the architectures read it: a nested ``state_dict`` entry
    unwrapped, ``module.`` prefixes stripped, batch counters dropped."""
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    return drop_batch_counters(strip_module_prefix(state_dict))


def rename_keys(state_dict: Mapping, rules) -> dict:
    """Keys rewritten by ``rules``, a sequence of ``(regex, replacement)`` applied in
    order with :func:`re.sub`; values unchanged."""
    out = {}
    for k, v in state_dict.items():
        for pattern, repl in rules:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out
