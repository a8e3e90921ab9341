"""From a reference state dict to a configured Flax model and its params.

``ARCHITECTURES`` names what :func:`convert_state_dict` accepts: ``vgg16``
(Places365 or ImageNet classifier in the reference's research-name layout; the
number of classes and widths are read from the file) and ``proggan`` (any
ProGAN generator; ``sizes`` read from the file, old key naming accepted).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.checkpoints.convert import convert, flatten_params
from jaxdissect.checkpoints.tables import (
    proggan_shapes,
    proggan_sizes,
    proggan_table,
    rename_old_proggan_keys,
    vgg16_config,
    vgg16_shapes,
    vgg16_table,
)
from jaxdissect.models.proggan import ProgressiveGenerator
from jaxdissect.models.vgg16 import VGG16

ARCHITECTURES = ("vgg16", "proggan")


def model_from_config(arch: str, config: Mapping):
    """The Flax module for ``arch`` with constructor arguments ``config``."""
    if arch == "vgg16":
        return VGG16(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    if arch == "proggan":
        return ProgressiveGenerator(sizes=tuple(config["sizes"]))
    raise ValueError(f"unknown architecture {arch!r}; known: {list(ARCHITECTURES)}")


def traced_param_shapes(arch: str, model) -> dict:
    """Flat ``{"path": shape}`` of the params ``model`` creates, by abstract tracing
    (the oracle the tables' own shape functions are tested against)."""
    x = (jnp.zeros((1, 32, 32, 3)) if arch == "vgg16"
         else jnp.zeros((1, model.sizes[0])))
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    return {k: tuple(v.shape) for k, v in flatten_params(shapes).items()}


def convert_state_dict(state_dict: Mapping[str, np.ndarray], arch: str,
                       what: str = "checkpoint"):
    """Return ``(config, params)`` for ``arch`` from a reference state dict.

    ``config`` is the JSON-able constructor arguments (see :func:`model_from_config`);
    ``params`` a nested dict of float32 numpy arrays. Raises
    :class:`~jaxdissect.checkpoints.convert.CheckpointMismatch` naming every
    missing, unexpected or mis-shaped key.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {list(ARCHITECTURES)}")
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    what = f"{what} (as {arch})"
    if arch == "vgg16":
        config = vgg16_config(state_dict)
        table, shapes = vgg16_table(), vgg16_shapes(config)
    else:
        state_dict = rename_old_proggan_keys(state_dict)
        config = {"sizes": proggan_sizes(state_dict)}
        table, shapes = proggan_table(config["sizes"]), proggan_shapes(config["sizes"])
    params = convert(state_dict, table, shapes, what=what)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}, params
