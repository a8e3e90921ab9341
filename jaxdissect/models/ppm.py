"""Pyramid pooling (PSPNet) and the reference's colour segmentation network.

:class:`PyramidPooling` pools the top feature map into ``s x s`` bins for each
scale ``s in (1, 2, 3, 6)``, projects each to 512 channels (1x1 conv, BN, ReLU),
resizes back bilinearly and concatenates ``[x, branch_1, ..., branch_6]``. It has
the two orders of the reference:

* ``pooling="adaptive"`` (``segmodel/models.py`` ``PPMDeepsup``): adaptive average
  pooling, then conv-BN-ReLU, then resize;
* ``pooling="prroi"`` (``upsegmodel/models.py`` ``UPerNet``): Precise RoI pooling,
  then resize, then conv-BN-ReLU. The 1x1 conv and BN are affine and bilinear
  weights sum to one, so they are applied before the resize (on ``s x s`` values
  instead of the whole map); the ReLU stays after it.

:class:`DilatedPPMNet` is the colour segmenter of the reference
(``color-resnet18dilated-ppm_deepsup``): a dilated ResNet-18 encoder and the
``PPMDeepsup`` decoder at inference (its deep-supervision branch is training
only and not built). Output: logits at ``H/8``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxdissect.models.resample import adaptive_avg_pool, bilinear_resize, precise_roi_pool
from jaxdissect.models.resnet import (
    ConvBNReLU,
    FrozenBatchNorm,
    ResNet18DilatedEncoder,
    conv,
)

POOL_SCALES = (1, 2, 3, 6)


class PyramidPooling(nn.Module):
    """``[b, h, w, c] -> [b, h, w, c + 512 * len(scales)]``."""

    pooling: str = "adaptive"
    scales: Sequence[int] = POOL_SCALES
    width: int = 512

    @nn.compact
    def __call__(self, x):
        if self.pooling not in ("adaptive", "prroi"):
            raise ValueError(f"pooling must be 'adaptive' or 'prroi', not {self.pooling!r}")
        hw = x.shape[1:3]
        outs = [x]
        for i, s in enumerate(self.scales):
            name = "ppm" if self.pooling == "adaptive" else "ppm_conv"
            if self.pooling == "adaptive":
                y = adaptive_avg_pool(x, (s, s))
            else:
                y = precise_roi_pool(x, s)
            y = conv(self.width, 1, name=f"{name}_{i}_conv")(y)
            y = FrozenBatchNorm(self.width, name=f"{name}_{i}_bn")(y)
            if self.pooling == "adaptive":
                y = bilinear_resize(nn.relu(y), hw)
            else:
                y = nn.relu(bilinear_resize(y, hw))
            outs.append(y)
        return jnp.concatenate(outs, axis=-1)


class PPMDecoder(nn.Module):
    """The reference's ``PPMDeepsup`` at inference: ``c4`` -> logits ``[b, h, w, n]``."""

    num_classes: int

    @nn.compact
    def __call__(self, feats):
        y = PyramidPooling("adaptive", name="ppm")(feats[-1])
        y = ConvBNReLU(512, 3, name="conv_last")(y)
        return conv(self.num_classes, 1, bias=True, name="conv_last_cls")(y)


def stage_paths(depths, prefix: str = "encoder/") -> dict[str, str]:
    """``layer1``..``layer4`` -> the module path of each encoder stage's last block."""
    from jaxdissect.models.resnet import STAGE_NAMES
    return {STAGE_NAMES[s]: f"{prefix}{STAGE_NAMES[s]}_{d - 1}" for s, d in enumerate(depths)}


class DilatedPPMNet(nn.Module):
    """Colour segmenter: ``x [b, H, W, 3]`` normalised -> logits ``[b, H/8, W/8, n]``.

    Named layers (``layer_paths``, for :mod:`jaxdissect.taps`): ``layer1``..``layer4``
    (encoder stages) and ``ppm_last`` (the 512-channel feature before the classifier).
    """

    num_classes: int

    @property
    def layer_paths(self) -> dict[str, str]:
        return stage_paths((2, 2, 2, 2)) | {"ppm_last": "decoder/conv_last"}

    @nn.compact
    def __call__(self, x):
        feats = ResNet18DilatedEncoder(name="encoder")(x)
        return PPMDecoder(self.num_classes, name="decoder")(feats)
