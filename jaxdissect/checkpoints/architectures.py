"""From a reference state dict to a configured Flax model and its params.

``ARCHITECTURES`` names what :func:`convert_state_dict` accepts: ``vgg16``
(Places365 or ImageNet classifier in the reference's research-name layout; the
number of classes and widths are read from the file), ``proggan`` (any
ProGAN generator; ``sizes`` read from the file, old key naming accepted), and the
classifiers of :mod:`jaxdissect.checkpoints.tv_tables`: ``resnet`` (torchvision
ResNet-18 ... 152, or the reference's numbered ResNet-152; depths and block type read
from the file; ``module.`` prefixes of ``DataParallel`` files stripped), ``alexnet``
(the reference's Places365 AlexNet or torchvision's) and ``vit`` (torchvision ViT).

For ``vgg16`` and ``proggan`` the converted tree is the ``params`` collection; for the
others, which carry BatchNorm statistics or may, it is the whole variables dict
(``{"params": ..., "batch_stats": ...}``). :func:`as_variables` gives the variables
for either, to pass to ``model.apply``.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.checkpoints import tv_tables
from jaxdissect.checkpoints.convert import CheckpointMismatch, convert, flatten_params
from jaxdissect.checkpoints.tables import (
    proggan_shapes,
    proggan_sizes,
    proggan_table,
    rename_old_proggan_keys,
    vgg16_config,
    vgg16_shapes,
    vgg16_table,
)
from jaxdissect.models.alexnet import AlexNet
from jaxdissect.models.proggan import ProgressiveGenerator
from jaxdissect.models.tv_resnet import ResNet
from jaxdissect.models.vgg16 import VGG16
from jaxdissect.models.vit import ViT

ARCHITECTURES = ("vgg16", "proggan", "resnet", "alexnet", "vit")
#: Architectures whose converted tree is the whole variables dict.
VARIABLE_TREES = ("resnet", "alexnet", "vit")


def _tuples(config: Mapping) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def as_variables(arch: str, tree) -> dict:
    """The ``variables`` for ``model.apply`` from a converted tree of ``arch``."""
    return tree if arch in VARIABLE_TREES else {"params": tree}


def model_from_config(arch: str, config: Mapping):
    """The Flax module for ``arch`` with constructor arguments ``config``."""
    if arch == "vgg16":
        return VGG16(**_tuples(config))
    if arch == "proggan":
        return ProgressiveGenerator(sizes=tuple(config["sizes"]))
    if arch in _CLASSIFIERS:
        return _CLASSIFIERS[arch](**_tuples(config))
    raise ValueError(f"unknown architecture {arch!r}; known: {list(ARCHITECTURES)}")


def traced_param_shapes(arch: str, model) -> dict:
    """Flat ``{"path": shape}`` of the params ``model`` creates, by abstract tracing
    (the oracle the tables' own shape functions are tested against)."""
    x = (jnp.zeros((1, 32, 32, 3)) if arch == "vgg16"
         else jnp.zeros((1, model.sizes[0])))
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    return {k: tuple(v.shape) for k, v in flatten_params(shapes).items()}


def expected_shapes(arch: str, config: Mapping) -> dict:
    """Flat ``{"path": shape}`` of the tree :func:`convert_state_dict` produces for
    ``arch`` with ``config`` (params, or the whole variables for
    :data:`VARIABLE_TREES`), by abstract tracing of the model it describes."""
    model = model_from_config(arch, config)
    if arch in VARIABLE_TREES:
        return tv_tables.variable_shapes(model, _input_shape(arch, config))
    return traced_param_shapes(arch, model)


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
    if arch in VARIABLE_TREES:
        return _convert_classifier(state_dict, arch, what)
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    what = f"{what} (as {arch})"
    try:
        if arch == "vgg16":
            config = vgg16_config(state_dict)
            table, shapes = vgg16_table(), vgg16_shapes(config)
        else:
            state_dict = rename_old_proggan_keys(state_dict)
            config = {"sizes": proggan_sizes(state_dict)}
            table, shapes = proggan_table(config["sizes"]), proggan_shapes(config["sizes"])
    except CheckpointMismatch as e:
        raise CheckpointMismatch(f"{what}: {e}") from None
    params = convert(state_dict, table, shapes, what=what)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}, params


_CLASSIFIERS = {"resnet": ResNet, "alexnet": AlexNet, "vit": ViT}


def _input_shape(arch: str, config: Mapping) -> tuple:
    """A (small where the model allows) input that creates every variable."""
    if arch == "resnet":
        return (1, 32, 32, 3)
    return (1, config["image_size"], config["image_size"], 3)


def _convert_classifier(state_dict: Mapping, arch: str, what: str):
    """:func:`convert_state_dict` for ``resnet``, ``alexnet``, ``vit``."""
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    state_dict = tv_tables.drop_batch_counters(tv_tables.strip_module_prefix(state_dict))
    try:
        if arch == "resnet":
            layout = tv_tables.resnet_layout(state_dict)
            config = tv_tables.resnet_config(state_dict)
        elif arch == "alexnet":
            layout = tv_tables.alexnet_layout(state_dict)
            config = tv_tables.alexnet_config(state_dict)
        else:
            layout = "torchvision"
            state_dict = tv_tables.rename_old_vit_keys(state_dict)
            config = tv_tables.vit_config(state_dict)
    except CheckpointMismatch as e:
        raise CheckpointMismatch(f"{what} (as {arch}): {e}") from None
    model = model_from_config(arch, config)
    shapes = tv_tables.variable_shapes(model, _input_shape(arch, config))
    if arch == "resnet":
        table = tv_tables.resnet_table(shapes, layout)
    elif arch == "alexnet":
        table = tv_tables.alexnet_table(shapes, layout)
    else:
        table = tv_tables.torch_name_table(shapes)
    variables = convert(state_dict, table, shapes, what=f"{what} (as {arch}, {layout} layout)")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}, variables


def spec_from_converted(arch: str, model, params, name: str, class_names=None):
    """The :class:`~jaxdissect.spec.ModelSpec` of a converted ``arch`` model (each
    architecture module's ``spec`` factory); ``params`` is the converted tree."""
    from jaxdissect.models import alexnet, proggan, tv_resnet, vgg16, vit
    factories = {"vgg16": vgg16.spec, "resnet": tv_resnet.spec, "alexnet": alexnet.spec,
                 "vit": vit.spec}
    if arch == "proggan":
        return proggan.spec(model, params, name=name)
    if arch not in factories:
        raise ValueError(f"no model spec for architecture {arch!r}; known: "
                         f"{sorted(factories) + ['proggan']}")
    tree = as_variables(arch, params) if arch in VARIABLE_TREES else params
    return factories[arch](model, tree, name=name, class_names=class_names)
