"""A local weights file (``.pth`` / ``.pth.tar`` / ``.pt`` or ``.safetensors``) as a state
dict or as a :class:`~jaxdissect.spec.ModelSpec`, its architecture read from its keys."""

from __future__ import annotations

import os

import numpy as np

from jaxdissect.checkpoints.architectures import (
    convert_state_dict,
    detect_architecture,
    model_from_config,
    spec_from_converted,
)
from jaxdissect.checkpoints.convert import CheckpointMismatch
from jaxdissect.checkpoints.pth import load_state_dict
from jaxdissect.checkpoints.safetensors import is_safetensors, load_safetensors
from jaxdissect.errors import UserError

#: file names read as state dicts (anything else is refused before it is opened)
SUFFIXES = (".safetensors", ".pth", ".pth.tar", ".pt")


def is_weights_file(path) -> bool:
    return os.fspath(path).lower().endswith(SUFFIXES)


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The arrays of a ``.safetensors`` file, or of a ``.pth`` file's state dict, both
    through the bounded readers (:mod:`~jaxdissect.checkpoints.safetensors`,
    :mod:`~jaxdissect.checkpoints.pth`): no code runs, memory bounded by the file."""
    if is_safetensors(path):
        return load_safetensors(path)
    return load_state_dict(path)


def spec_from_file(path, name: str | None = None, arch: str | None = None,
                   class_names=None):
    """The :class:`~jaxdissect.spec.ModelSpec` of the weights in ``path`` (a ``.pth`` or
    ``.safetensors`` state dict), converted as ``arch``, by default the registered
    architecture its keys identify (:func:`detect_architecture`). ``name`` defaults to
    the path. Raises :class:`~jaxdissect.errors.UserError` for a missing file or one of
    no known architecture, :class:`~jaxdissect.checkpoints.pth.CheckpointError` for an
    unreadable one, :class:`CheckpointMismatch` for keys that do not fit."""
    import jax
    import jax.numpy as jnp
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"model file {path!r} does not exist")
    if not is_weights_file(path):
        raise UserError(f"{path}: not a weights file (expected one of {list(SUFFIXES)})")
    what = os.path.basename(path)
    state = read_state_dict(path)
    if arch is None:
        try:
            arch = detect_architecture(state, what)
        except CheckpointMismatch as e:
            raise UserError(str(e)) from None
    config, tree = convert_state_dict(state, arch, what=what)
    del state
    return spec_from_converted(arch, model_from_config(arch, config),
                               jax.tree_util.tree_map(jnp.asarray, tree), name or path,
                               class_names=class_names)
