"""Unified perceptual parsing network: ResNet-50 encoder + UPerNet decoder.

Layout of the reference (netdissect ``upsegmodel/models.py``, Xiao et al. 2018,
"Unified Perceptual Parsing for Scene Understanding"), used for objects, parts
and materials (``upp-resnet50-upernet``):

* encoder: deep-stem ResNet-50, stages ``c1..c4`` (256, 512, 1024, 2048 channels
  at strides 4, 8, 16, 32);
* PPM on ``c4`` with Precise RoI pooling (scales 1, 2, 3, 6), then
  ``ppm_last_conv`` (3x3 conv-BN-ReLU to ``fpn_dim``) -> ``f``;
* FPN top-down: for ``i = 2, 1, 0``: ``f = resize(f) + fpn_in[i](c_{i+1})``
  (1x1 conv-BN-ReLU), ``P_i = fpn_out[i](f)`` (3x3 conv-BN-ReLU); ``P_3`` is the
  PPM output itself;
* material head on ``P_0``; object and part heads on ``conv_fusion`` (3x3
  conv-BN-ReLU) of ``[P_0, resize(P_1), resize(P_2), resize(P_3)]``. Each head is
  a 3x3 conv-BN-ReLU and a 1x1 conv with bias. The scene head (image-level
  classification) is not used by dissection and is not built.

Output logits are at stride 4 (``[b, H/4, W/4, n]``); the segmenter resizes them to
the segmentation grid and applies the softmaxes (:mod:`jaxdissect.segmentation`).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxdissect.models.ppm import PyramidPooling, stage_paths
from jaxdissect.models.resample import bilinear_resize
from jaxdissect.models.resnet import ConvBNReLU, ResNet50Encoder, conv

HEADS = ("object", "part", "material")


class Head(nn.Module):
    """3x3 conv-BN-ReLU then 1x1 classifier with bias."""

    width: int
    num_classes: int

    @nn.compact
    def __call__(self, x):
        x = ConvBNReLU(self.width, 3, name="cbr")(x)
        return conv(self.num_classes, 1, bias=True, name="cls")(x)


class UPerNetDecoder(nn.Module):
    """``(c1, c2, c3, c4)`` -> ``{"object", "part", "material"}`` logits at ``c1``'s size."""

    num_object: int
    num_part: int
    num_material: int
    fpn_dim: int = 512

    @nn.compact
    def __call__(self, feats):
        f = PyramidPooling("prroi", name="ppm")(feats[-1])
        f = ConvBNReLU(self.fpn_dim, 3, name="ppm_last_conv")(f)
        pyramid = [f]
        for i in reversed(range(len(feats) - 1)):
            lateral = ConvBNReLU(self.fpn_dim, 1, name=f"fpn_in_{i}")(feats[i])
            f = lateral + bilinear_resize(f, lateral.shape[1:3])
            pyramid.insert(0, ConvBNReLU(self.fpn_dim, 3, name=f"fpn_out_{i}")(f))
        material = Head(self.fpn_dim, self.num_material, name="material_head")(pyramid[0])
        size = pyramid[0].shape[1:3]
        fused = jnp.concatenate([pyramid[0]] + [bilinear_resize(p, size) for p in pyramid[1:]],
                                axis=-1)
        fused = ConvBNReLU(self.fpn_dim, 3, name="conv_fusion")(fused)
        return {
            "object": Head(self.fpn_dim, self.num_object, name="object_head")(fused),
            "part": Head(self.fpn_dim, self.num_part, name="part_head")(fused),
            "material": material,
        }


class UnifiedParsingNet(nn.Module):
    """``x [b, H, W, 3]`` (BGR, mean-subtracted, 0..255 scale) -> ``logits``: dict
    ``object [b, H/4, W/4, num_object]``, ``part [.., num_part]`` (all objects' parts,
    in the decoder's block order), ``material [.., num_material]``.

    Named layers (``layer_paths``, for :mod:`jaxdissect.taps`): ``layer1``..``layer4``,
    ``ppm`` (PPM output), ``fusion`` (fused FPN feature feeding the object and part
    heads).
    """

    num_object: int
    num_part: int
    num_material: int
    fpn_dim: int = 512

    @property
    def layer_paths(self) -> dict[str, str]:
        return stage_paths((3, 4, 6, 3)) | {"ppm": "decoder/ppm_last_conv",
                                            "fusion": "decoder/conv_fusion"}

    @nn.compact
    def __call__(self, x):
        feats = ResNet50Encoder(name="encoder")(x)
        return UPerNetDecoder(self.num_object, self.num_part, self.num_material,
                              self.fpn_dim, name="decoder")(feats)
