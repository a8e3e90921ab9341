"""Conversion tables for the torchvision-layout classifiers: ResNet, AlexNet, ViT.

These models carry BatchNorm statistics, so their tables map *variable* paths,
collection first (``params/layer1/0/conv1/kernel``, ``batch_stats/bn1/mean``), and
conversion yields the whole variables dict ``{"params": ..., "batch_stats": ...}``.

The Flax modules mirror the PyTorch module tree, so a table is a naming rule applied
to every variable the model creates (:func:`torch_name_table`): ``/`` becomes ``.``,
and each leaf gets the PyTorch name of the same tensor. Layouts whose modules are
named differently rename the module part first:

* torchvision ResNet: identity (``layer1.0.conv1.weight``);
* the reference's ResNet-152 (``experiment/oldresnet152.py``, a ``Sequential`` of
  numbered Torch7 layers): :func:`oldresnet_module` (``layer1.0.conv1`` ->
  ``4.0.0.0.0``, ``fc`` -> ``10.1``);
* the reference's AlexNet (``experiment/oldalexnet.py``): identity (``conv1.weight``,
  ``fc6.weight``); torchvision's AlexNet: :data:`TORCHVISION_ALEXNET`
  (``conv1`` -> ``features.0``, ``fc6`` -> ``classifier.1``);
* torchvision ViT: identity, and the older torchvision naming of the MLP
  (``mlp.linear_1``/``mlp.linear_2``) is renamed to ``mlp.0``/``mlp.3`` before
  conversion (:func:`rename_old_vit_keys`).

Files saved from a ``DataParallel`` model (the Places365 ``.pth.tar`` ResNets) prefix
every key with ``module.``: :func:`strip_module_prefix`. Recent PyTorch adds a
``num_batches_tracked`` counter to every BatchNorm; it plays no part in evaluation and
is dropped (:func:`drop_batch_counters`).
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from jaxdissect.checkpoints.convert import CheckpointMismatch, Table, dim_of, flatten_params

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

TORCHVISION_ALEXNET = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6",
                       "conv4": "features.8", "conv5": "features.10",
                       "fc6": "classifier.1", "fc7": "classifier.4", "fc8": "classifier.6"}


def variable_shapes(model, x_shape: tuple) -> dict:
    """Flat ``{"params/conv1/kernel": shape, "batch_stats/bn1/mean": shape}`` of the
    variables ``model`` creates for an input of ``x_shape`` (abstract trace: nothing is
    computed)."""
    tree = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(x_shape, jnp.float32))
    return {k: tuple(v.shape) for k, v in flatten_params(tree).items()}


def torch_name_table(shapes: Mapping[str, tuple],
                     rename: Callable[[str], str] = lambda module: module) -> Table:
    """Variable path -> (PyTorch key, transform) for every path in ``shapes``.
    ``rename`` maps the module part (``layer1.0.conv1``) to the state dict's."""
    table: Table = {}
    for path in shapes:
        _collection, *modules, leaf = path.split("/")
        if leaf not in LEAF_RULES:
            raise ValueError(f"no PyTorch name for variable {path!r}")
        torch_leaf, transform = LEAF_RULES[leaf]
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


# ------------------------------------------------------------------ ResNet

def oldresnet_module(module: str) -> str:
    """Module path of the torchvision-layout ResNet -> the reference ResNet-152's
    numbered ``Sequential`` path (``layer2.0.downsample.1`` -> ``5.0.0.1.1``)."""
    if module in ("conv1", "bn1"):
        return {"conv1": "0", "bn1": "1"}[module]
    if module == "fc":
        return "10.1"
    m = re.fullmatch(r"layer([1-4])\.(\d+)\.(\w+?)(?:\.([01]))?", module)
    if m is None:
        raise ValueError(f"no reference ResNet-152 name for module {module!r}")
    stage, block, part, sub = m.groups()
    head = f"{int(stage) + 3}.{block}.0"
    if part == "downsample":
        return f"{head}.1.{sub}"
    main = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}
    if part not in main:
        raise ValueError(f"no reference ResNet-152 name for module {module!r}")
    return f"{head}.0.{main[part]}"


def resnet_layout(state_dict: Mapping) -> str:
    """``"torchvision"`` or ``"oldresnet"`` (the reference's numbered ResNet-152)."""
    if "conv1.weight" in state_dict:
        return "torchvision"
    if "0.weight" in state_dict and "10.1.weight" in state_dict:
        return "oldresnet"
    raise CheckpointMismatch(
        "not a ResNet checkpoint in the torchvision layout (no key 'conv1.weight') nor "
        f"the reference's ResNet-152 layout (no key '0.weight'); found keys like "
        f"{sorted(state_dict)[:4]}")


def resnet_config(state_dict: Mapping) -> dict:
    """``ResNet`` constructor arguments (block, depths, num_classes) read from a
    state dict of either layout."""
    layout = resnet_layout(state_dict)
    if layout == "torchvision":
        def key(s, j, part):
            return f"layer{s}.{j}.{part}.weight"
        fc = "fc.weight"
    else:
        def key(s, j, part):
            return f"{oldresnet_module(f'layer{s}.{j}.{part}')}.weight"
        fc = "10.1.weight"
    depths = []
    for s in range(1, 5):
        j = 0
        while key(s, j, "conv1") in state_dict:
            j += 1
        if j == 0:
            raise CheckpointMismatch(f"not a ResNet checkpoint: no key {key(s, 0, 'conv1')!r}")
        depths.append(j)
    if fc not in state_dict:
        raise CheckpointMismatch(f"not a ResNet classifier checkpoint: no key {fc!r}")
    block = "bottleneck" if key(1, 0, "conv3") in state_dict else "basic"
    return dict(block=block, depths=tuple(depths), num_classes=dim_of(state_dict, fc, 0, 2))


def resnet_table(shapes: Mapping[str, tuple], layout: str) -> Table:
    return torch_name_table(shapes, oldresnet_module if layout == "oldresnet"
                            else (lambda m: m))


# ----------------------------------------------------------------- AlexNet

def alexnet_layout(state_dict: Mapping) -> str:
    """``"reference"`` (``conv1.weight`` ...) or ``"torchvision"`` (``features.0.weight``)."""
    if "conv1.weight" in state_dict:
        return "reference"
    if "features.0.weight" in state_dict:
        return "torchvision"
    raise CheckpointMismatch(
        "not an AlexNet checkpoint: no key 'conv1.weight' (reference layout) nor "
        f"'features.0.weight' (torchvision layout); found keys like {sorted(state_dict)[:4]}")


def alexnet_config(state_dict: Mapping) -> dict:
    """``AlexNet`` constructor arguments read from a state dict of either layout
    (widths and groups from the convolution weights, ``[out, in / groups, k, k]``)."""
    from jaxdissect.models.alexnet import REFERENCE, TORCHVISION
    layout = alexnet_layout(state_dict)
    name = (lambda m: m) if layout == "reference" else TORCHVISION_ALEXNET.__getitem__
    widths, groups, cin = [], [], 3
    for i in range(1, 6):
        key = f"{name(f'conv{i}')}.weight"
        if key not in state_dict:
            raise CheckpointMismatch(f"not an AlexNet checkpoint: no key {key!r}")
        widths.append(dim_of(state_dict, key, 0, 4))
        groups.append(max(cin // max(dim_of(state_dict, key, 1, 4), 1), 1))
        cin = widths[-1]
    for fc in ("fc7", "fc8"):
        if f"{name(fc)}.weight" not in state_dict:
            raise CheckpointMismatch(f"not an AlexNet checkpoint: no key {name(fc)}.weight")
    base = REFERENCE if layout == "reference" else TORCHVISION
    return {**base, "widths": tuple(widths), "groups": tuple(groups),
            "fc_width": dim_of(state_dict, f"{name('fc7')}.weight", 0, 2),
            "num_classes": dim_of(state_dict, f"{name('fc8')}.weight", 0, 2)}


def alexnet_table(shapes: Mapping[str, tuple], layout: str) -> Table:
    if layout == "reference":
        return torch_name_table(shapes)
    return torch_name_table(shapes, TORCHVISION_ALEXNET.__getitem__)


# --------------------------------------------------------------------- ViT

#: torchvision ViT widths -> heads (not recorded in the weights).
VIT_HEADS = {768: 12, 1024: 16, 1280: 16}


def rename_old_vit_keys(state_dict: Mapping) -> dict:
    """``...mlp.linear_1.*`` / ``...mlp.linear_2.*`` (torchvision < 0.13) ->
    ``...mlp.0.*`` / ``...mlp.3.*``; other keys unchanged."""
    out = {}
    for k, v in state_dict.items():
        k = re.sub(r"\.mlp\.linear_1\.", ".mlp.0.", k)
        out[re.sub(r"\.mlp\.linear_2\.", ".mlp.3.", k)] = v
    return out


def vit_config(state_dict: Mapping) -> dict:
    """``ViT`` constructor arguments read from a torchvision ViT state dict."""
    for key in ("conv_proj.weight", "encoder.pos_embedding", "heads.head.weight",
                "encoder.layers.encoder_layer_0.mlp.0.weight"):
        if key not in state_dict:
            raise CheckpointMismatch(f"not a torchvision ViT checkpoint: no key {key!r} "
                                     f"(found keys like {sorted(state_dict)[:4]})")
    hidden = dim_of(state_dict, "conv_proj.weight", 0, 4)
    patch = dim_of(state_dict, "conv_proj.weight", 2, 4)
    depth = 0
    while f"encoder.layers.encoder_layer_{depth}.ln_1.weight" in state_dict:
        depth += 1
    tokens = dim_of(state_dict, "encoder.pos_embedding", 1, 3)
    grid = round((tokens - 1) ** 0.5)
    if grid * grid + 1 != tokens:
        raise CheckpointMismatch(f"encoder.pos_embedding has {tokens} tokens, not 1 + a "
                                 f"square grid")
    if int(hidden) not in VIT_HEADS:
        raise CheckpointMismatch(f"ViT width {hidden}: the number of attention heads is not "
                                 f"in the weights and is known only for torchvision's "
                                 f"widths {sorted(VIT_HEADS)}")
    return dict(patch=int(patch), hidden=int(hidden), depth=depth, heads=VIT_HEADS[int(hidden)],
                mlp_dim=dim_of(state_dict, "encoder.layers.encoder_layer_0.mlp.0.weight", 0, 2),
                num_classes=dim_of(state_dict, "heads.head.weight", 0, 2),
                image_size=grid * int(patch))
