"""Conversion tables for the reference's segmentation checkpoints.

Each segmenter ships two PyTorch state dicts, ``encoder_epoch_N.pth`` and
``decoder_epoch_N.pth``. The tables map a Flax parameter path (of
:class:`~jaxdissect.models.upernet.UnifiedParsingNet` or
:class:`~jaxdissect.models.ppm.DilatedPPMNet`) to a reference key and transform,
and the strict check of :func:`jaxdissect.checkpoints.convert.convert` rejects
any missing, unexpected or mis-shaped key.

Keys deliberately not used (and dropped before the strict check):
``*.num_batches_tracked`` (a BatchNorm training counter), the unified-parsing
``scene_head.*`` (image-level scene classifier), and the colour decoder's
training-only deep-supervision branch ``cbr_deepsup.*``/``conv_last_deepsup.*``.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.checkpoints.convert import Table, convert, flatten_params
from jaxdissect.models.ppm import POOL_SCALES, DilatedPPMNet
from jaxdissect.models.upernet import HEADS, UnifiedParsingNet

BN_FIELDS = (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"),
             ("running_var", "var"))


def _conv(table: Table, path: str, key: str, bias: bool = False) -> None:
    table[f"{path}/kernel"] = (f"{key}.weight", "conv")
    if bias:
        table[f"{path}/bias"] = (f"{key}.bias", "copy")


def _bn(table: Table, path: str, key: str) -> None:
    for src, dst in BN_FIELDS:
        table[f"{path}/{dst}"] = (f"{key}.{src}", "copy")


def resnet_table(block: str, depths: Sequence[int], prefix: str = "encoder") -> Table:
    """Deep-stem ResNet encoder (``conv1``, ``bn1`` .. ``layer4.N.downsample.1``)."""
    table: Table = {}
    for i in (1, 2, 3):
        _conv(table, f"{prefix}/conv{i}", f"conv{i}")
        _bn(table, f"{prefix}/bn{i}", f"bn{i}")
    nconv = 3 if block == "bottleneck" else 2
    for s, depth in enumerate(depths, start=1):
        for j in range(depth):
            path, key = f"{prefix}/layer{s}_{j}", f"layer{s}.{j}"
            for k in range(1, nconv + 1):
                _conv(table, f"{path}/conv{k}", f"{key}.conv{k}")
                _bn(table, f"{path}/bn{k}", f"{key}.bn{k}")
            if j == 0:  # every stage opens with a projection (the stem gives 128 channels)
                _conv(table, f"{path}/downsample_conv", f"{key}.downsample.0")
                _bn(table, f"{path}/downsample_bn", f"{key}.downsample.1")
    return table


def _cbr(table: Table, path: str, key: str) -> None:
    """A ``Sequential(conv, bn, relu)`` onto :class:`ConvBNReLU`."""
    _conv(table, f"{path}/conv", f"{key}.0")
    _bn(table, f"{path}/bn", f"{key}.1")


def upernet_decoder_table(prefix: str = "decoder", scales=POOL_SCALES, levels: int = 4) -> Table:
    """``UPerNet`` decoder keys (``ppm_conv.i.0``, ``fpn_in.i.0``, ``object_head.0.0`` ...)."""
    table: Table = {}
    for i in range(len(scales)):
        _conv(table, f"{prefix}/ppm/ppm_conv_{i}_conv", f"ppm_conv.{i}.0")
        _bn(table, f"{prefix}/ppm/ppm_conv_{i}_bn", f"ppm_conv.{i}.1")
    _cbr(table, f"{prefix}/ppm_last_conv", "ppm_last_conv")
    for i in range(levels - 1):
        _cbr(table, f"{prefix}/fpn_in_{i}", f"fpn_in.{i}")
        _cbr(table, f"{prefix}/fpn_out_{i}", f"fpn_out.{i}.0")
    _cbr(table, f"{prefix}/conv_fusion", "conv_fusion")
    for head in HEADS:
        _cbr(table, f"{prefix}/{head}_head/cbr", f"{head}_head.0")
        _conv(table, f"{prefix}/{head}_head/cls", f"{head}_head.1", bias=True)
    return table


def ppm_decoder_table(prefix: str = "decoder", scales=POOL_SCALES) -> Table:
    """``PPMDeepsup`` keys used at inference (``ppm.i.1``, ``ppm.i.2``, ``conv_last.{0,1,4}``)."""
    table: Table = {}
    for i in range(len(scales)):
        _conv(table, f"{prefix}/ppm/ppm_{i}_conv", f"ppm.{i}.1")
        _bn(table, f"{prefix}/ppm/ppm_{i}_bn", f"ppm.{i}.2")
    _cbr(table, f"{prefix}/conv_last", "conv_last")
    _conv(table, f"{prefix}/conv_last_cls", "conv_last.4", bias=True)
    return table


UNUSED_KEYS = {
    "upernet": (r".*num_batches_tracked", r"scene_head\..*"),
    "ppm": (r".*num_batches_tracked", r"cbr_deepsup\..*", r"conv_last_deepsup\..*"),
}


def _strip_unused(state_dict: Mapping, patterns) -> dict:
    return {k: v for k, v in state_dict.items()
            if not any(re.fullmatch(p, k) for p in patterns)}


def _merged_source(encoder_sd: Mapping, decoder_sd: Mapping, decoder_unused) -> dict:
    """One namespace ``encoder:<key>`` / ``decoder:<key>`` for the strict check."""
    enc = _strip_unused(encoder_sd, UNUSED_KEYS["upernet"][:1])
    dec = _strip_unused(decoder_sd, decoder_unused)
    out = {f"encoder:{k}": np.asarray(v) for k, v in enc.items()}
    out.update({f"decoder:{k}": np.asarray(v) for k, v in dec.items()})
    return out


def _namespaced(table: Table) -> Table:
    return {path: (f"{path.split('/', 1)[0]}:{src}", tf) for path, (src, tf) in table.items()}


def _shapes(model, x) -> dict:
    tree = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    return {k: tuple(v.shape) for k, v in flatten_params(tree).items()}


def unified_parsing_params(model: UnifiedParsingNet, encoder_sd: Mapping,
                           decoder_sd: Mapping, what: str = "upp-resnet50-upernet") -> dict:
    """Params of ``model`` from the reference's encoder and decoder state dicts."""
    table = _namespaced({**resnet_table("bottleneck", (3, 4, 6, 3)),
                         **upernet_decoder_table()})
    src = _merged_source(encoder_sd, decoder_sd, UNUSED_KEYS["upernet"])
    return convert(src, table, _shapes(model, jnp.zeros((1, 64, 64, 3))), what)


def colour_params(model: DilatedPPMNet, encoder_sd: Mapping, decoder_sd: Mapping,
                  what: str = "color-resnet18dilated-ppm_deepsup") -> dict:
    """Params of ``model`` from the reference's dilated ResNet-18 + PPMDeepsup state dicts."""
    table = _namespaced({**resnet_table("basic", (2, 2, 2, 2)), **ppm_decoder_table()})
    src = _merged_source(encoder_sd, decoder_sd, UNUSED_KEYS["ppm"])
    return convert(src, table, _shapes(model, jnp.zeros((1, 64, 64, 3))), what)
