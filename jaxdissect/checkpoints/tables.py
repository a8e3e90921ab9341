"""Conversion tables and architecture inference for the reference's checkpoints.

VGG-16 (reference ``oldvgg16``): ``features.conv1_1.weight`` ...,
``classifier.fc6.weight``, ``classifier.fc7.*``, ``classifier.fc8a.*``.
ProGAN (reference ``proggan``): ``layerN.conv.weight``, ``layerN.wscale.b``,
``output_RxR.conv.weight``, ``output_RxR.wscale.b``; older files use
``features.N.conv.weight`` ... and ``output.conv.weight``, which
:func:`rename_old_proggan_keys` maps to the current names.
"""

from __future__ import annotations

import itertools
import re
from typing import Mapping

from jaxdissect.checkpoints.convert import CheckpointMismatch, Table, dim_of
from jaxdissect.models.proggan import progan_layer_names
from jaxdissect.models.vgg16 import STAGE_DEPTHS, vgg_layer_names


def vgg16_table(stage_depths=STAGE_DEPTHS) -> Table:
    """Flax path -> (reference key, transform) for :class:`~jaxdissect.models.VGG16`."""
    table: Table = {}
    for name in vgg_layer_names(stage_depths):
        if name.startswith("conv"):
            table[f"{name}/kernel"] = (f"features.{name}.weight", "conv")
            table[f"{name}/bias"] = (f"features.{name}.bias", "copy")
        elif name.startswith("fc"):
            table[f"{name}/weight"] = (f"classifier.{name}.weight", "copy")
            table[f"{name}/bias"] = (f"classifier.{name}.bias", "copy")
    return table


def vgg16_shapes(config: Mapping) -> dict:
    """Flat ``{"conv1_1/kernel": shape}`` of :class:`~jaxdissect.models.VGG16` params for
    ``config`` (``widths``, ``fc_width``, ``num_classes``; standard 7x7 pooled input to
    fc6), computed without tracing the model."""
    shapes, cin = {}, 3
    for s, (depth, width) in enumerate(zip(STAGE_DEPTHS, config["widths"]), start=1):
        for j in range(1, depth + 1):
            shapes[f"conv{s}_{j}/kernel"] = (3, 3, cin, width)
            shapes[f"conv{s}_{j}/bias"] = (width,)
            cin = width
    fc_in = cin * 7 * 7
    for name, n_out in (("fc6", config["fc_width"]), ("fc7", config["fc_width"]),
                        ("fc8a", config["num_classes"])):
        shapes[f"{name}/weight"] = (n_out, fc_in)
        shapes[f"{name}/bias"] = (n_out,)
        fc_in = n_out
    return shapes


def vgg16_config(state_dict: Mapping) -> dict:
    """VGG16 constructor arguments read from a reference state dict."""
    widths = []
    for s, depth in enumerate(STAGE_DEPTHS, start=1):
        key = f"features.conv{s}_{depth}.weight"
        if key not in state_dict:
            raise CheckpointMismatch(
                f"not a VGG-16 checkpoint in the reference layout: no key {key!r} "
                f"(found keys like {sorted(state_dict)[:4]})")
        widths.append(dim_of(state_dict, key, 0, 4))
    for key in ("classifier.fc7.weight", "classifier.fc8a.weight"):
        if key not in state_dict:
            raise CheckpointMismatch(f"not a VGG-16 checkpoint: no key {key!r}")
    return dict(widths=tuple(widths),
                fc_width=dim_of(state_dict, "classifier.fc7.weight", 0, 2),
                num_classes=dim_of(state_dict, "classifier.fc8a.weight", 0, 2))


def rename_old_proggan_keys(state_dict: Mapping) -> dict:
    """Map the older ProGAN naming (``features.N.*``, ``output.*``) to ``layerN+1.*``,
    ``output_RxR.*``; other keys are kept (so the strict check reports them)."""
    if "features.0.conv.weight" not in state_dict:
        return dict(state_dict)
    out = {}
    n = 0
    while f"features.{n}.conv.weight" in state_dict:
        n += 1
    r = 4 * 2 ** ((n - 1) // 2)
    for key, v in state_dict.items():
        m = re.fullmatch(r"features\.(\d+)\.(.*)", key)
        if m:
            out[f"layer{int(m.group(1)) + 1}.{m.group(2)}"] = v
        elif key.startswith("output."):
            out[f"output_{r}x{r}." + key[len("output."):]] = v
        else:
            out[key] = v
    return out


def proggan_sizes(state_dict: Mapping) -> tuple[int, ...]:
    """``sizes`` ``[z_dim, d4, d8, ...]`` read from a (renamed) ProGAN state dict."""
    sizes = []
    for i in itertools.count():
        key = f"layer{i + 1}.conv.weight"
        if key not in state_dict:
            break
        if i == 0:
            sizes.append(dim_of(state_dict, key, 1, 4))
        if i % 2 == 0:
            sizes.append(dim_of(state_dict, key, 0, 4))
    if len(sizes) < 2:
        raise CheckpointMismatch(
            "not a ProGAN generator checkpoint: no key 'layer1.conv.weight' "
            f"(found keys like {sorted(state_dict)[:4]})")
    return tuple(sizes)


def proggan_shapes(sizes) -> dict:
    """Flat ``{"layer1/kernel": shape}`` of
    :class:`~jaxdissect.models.ProgressiveGenerator` params, without tracing."""
    names = progan_layer_names(sizes)
    chans = [sizes[1], sizes[1]] + [c for c in sizes[2:] for _ in (0, 1)]
    shapes, cin = {}, sizes[0]
    for i, (name, cout) in enumerate(zip(names[:-1], chans)):
        k = 4 if i == 0 else 3
        shapes[f"{name}/kernel"] = (k, k, cin, cout)
        shapes[f"{name}/bias"] = (cout,)
        cin = cout
    shapes[f"{names[-1]}/kernel"] = (1, 1, cin, 3)
    shapes[f"{names[-1]}/bias"] = (3,)
    return shapes


def proggan_table(sizes) -> Table:
    """Flax path -> (reference key, transform) for
    :class:`~jaxdissect.models.ProgressiveGenerator`."""
    table: Table = {}
    for name in progan_layer_names(sizes):
        table[f"{name}/kernel"] = (f"{name}.conv.weight", "conv")
        table[f"{name}/bias"] = (f"{name}.wscale.b", "copy")
    return table
