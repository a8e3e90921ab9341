"""ResNet encoders of the reference's segmentation networks (NHWC, eval-mode BatchNorm).

Layout of the reference (netdissect ``upsegmodel/resnet.py`` and
``segmodel/resnet.py``, the CSAIL scene-parsing ResNets): a deep stem of three
3x3 convolutions (``conv1`` 3->64 stride 2, ``conv2`` 64->64, ``conv3`` 64->128,
each followed by BatchNorm ``bn1..bn3`` and ReLU) and a 3x3 stride-2 max pool,
then four stages ``layer1..layer4`` of bottleneck (ResNet-50) or basic
(ResNet-18) blocks. The encoder returns all four stage outputs, which the
decoders consume (``[b, H/4, W/4, c1]`` ... ``[b, H/32, W/32, c4]``).

``dilate_scale=8`` is the reference's ``ResnetDilated``: ``layer3`` and
``layer4`` keep stride 1; their 3x3 convolutions get dilation 2 and 4 (the
first, formerly strided, 3x3 convolution of each stage gets half of that), so
``layer3``/``layer4`` stay at ``H/8``.

Parameter names follow the PyTorch state dict (``layer1_0/conv1/kernel`` for
``layer1.0.conv1.weight``); see :mod:`jaxdissect.models.segmenter_convert`.
BatchNorm is always in evaluation mode: its running statistics are parameters.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax

BN_EPS = 1e-5


class FrozenBatchNorm(nn.Module):
    """BatchNorm with fixed statistics: ``(x - mean) / sqrt(var + eps) * scale + bias``."""

    features: int
    eps: float = BN_EPS

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (self.features,))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        mean = self.param("mean", nn.initializers.zeros, (self.features,))
        var = self.param("var", nn.initializers.ones, (self.features,))
        mult = scale * jax.lax.rsqrt(var + self.eps)
        shape = (1,) * (x.ndim - 1) + (self.features,)
        return x * mult.reshape(shape) + (bias - mean * mult).reshape(shape)


def conv(features: int, kernel: int, stride: int = 1, dilation: int = 1,
         bias: bool = False, name: str | None = None) -> nn.Conv:
    """PyTorch-style convolution: padding ``dilation * (kernel // 2)``."""
    pad = dilation * (kernel // 2)
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), kernel_dilation=(dilation, dilation),
                   use_bias=bias, name=name)


class ConvBNReLU(nn.Module):
    """The reference's ``conv3x3_bn_relu`` (and its 1x1 variants): conv, BN, ReLU."""

    features: int
    kernel: int = 3

    @nn.compact
    def __call__(self, x):
        x = conv(self.features, self.kernel, name="conv")(x)
        return nn.relu(FrozenBatchNorm(self.features, name="bn")(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 (x4), residual; ``downsample`` on the skip."""

    planes: int
    stride: int = 1
    dilation: int = 1
    first_dilation: int = 1
    downsample: bool = False
    expansion = 4

    @nn.compact
    def __call__(self, x):
        out = nn.relu(FrozenBatchNorm(self.planes, name="bn1")(
            conv(self.planes, 1, name="conv1")(x)))
        out = conv(self.planes, 3, self.stride, self.first_dilation, name="conv2")(out)
        out = nn.relu(FrozenBatchNorm(self.planes, name="bn2")(out))
        out = conv(self.planes * 4, 1, name="conv3")(out)
        out = FrozenBatchNorm(self.planes * 4, name="bn3")(out)
        if self.downsample:
            x = conv(self.planes * 4, 1, self.stride, name="downsample_conv")(x)
            x = FrozenBatchNorm(self.planes * 4, name="downsample_bn")(x)
        return nn.relu(out + x)


class BasicBlock(nn.Module):
    """3x3 (stride, dilation) -> 3x3 (dilation), residual; ``downsample`` on the skip."""

    planes: int
    stride: int = 1
    dilation: int = 1
    first_dilation: int = 1
    downsample: bool = False
    expansion = 1

    @nn.compact
    def __call__(self, x):
        out = conv(self.planes, 3, self.stride, self.first_dilation, name="conv1")(x)
        out = nn.relu(FrozenBatchNorm(self.planes, name="bn1")(out))
        out = conv(self.planes, 3, 1, self.dilation, name="conv2")(out)
        out = FrozenBatchNorm(self.planes, name="bn2")(out)
        if self.downsample:
            x = conv(self.planes, 1, self.stride, name="downsample_conv")(x)
            x = FrozenBatchNorm(self.planes, name="downsample_bn")(x)
        return nn.relu(out + x)


STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")


class ResNetEncoder(nn.Module):
    """Deep-stem ResNet trunk. ``x [b, H, W, 3]`` -> ``(c1, c2, c3, c4)`` stage outputs.

    ``block``: ``"bottleneck"`` or ``"basic"``; ``depths``: blocks per stage;
    ``dilate_scale``: ``None`` (output strides 4, 8, 16, 32) or ``8`` (4, 8, 8, 8).
    """

    block: str = "bottleneck"
    depths: Sequence[int] = (3, 4, 6, 3)
    dilate_scale: int | None = None

    def stage_plan(self):
        """Per stage ``(planes, stride, first_dilation, dilation)`` as in the reference."""
        if self.dilate_scale not in (None, 8):
            raise ValueError(f"dilate_scale must be None or 8, not {self.dilate_scale!r}")
        plan = [(64, 1, 1, 1), (128, 2, 1, 1), (256, 2, 1, 1), (512, 2, 1, 1)]
        if self.dilate_scale == 8:
            plan[2] = (256, 1, 1, 2)
            plan[3] = (512, 1, 2, 4)
        return plan

    @nn.compact
    def __call__(self, x):
        if self.block not in ("bottleneck", "basic"):
            raise ValueError(f"block must be 'bottleneck' or 'basic', not {self.block!r}")
        cls = Bottleneck if self.block == "bottleneck" else BasicBlock
        for i, width in enumerate((64, 64, 128), start=1):
            x = conv(width, 3, 2 if i == 1 else 1, name=f"conv{i}")(x)
            x = nn.relu(FrozenBatchNorm(width, name=f"bn{i}")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        inplanes = 128
        outs = []
        for s, (depth, (planes, stride, first_dil, dil)) in enumerate(
                zip(self.depths, self.stage_plan())):
            for j in range(depth):
                first = j == 0
                block = cls(
                    planes=planes,
                    stride=stride if first else 1,
                    dilation=dil,
                    first_dilation=first_dil if first else dil,
                    # the reference decides before dilation removes the stride
                    downsample=first and (s > 0 or inplanes != planes * cls.expansion),
                    name=f"{STAGE_NAMES[s]}_{j}")
                x = block(x)
            inplanes = planes * cls.expansion
            outs.append(x)
        return tuple(outs)


ResNet50Encoder = functools.partial(ResNetEncoder, block="bottleneck", depths=(3, 4, 6, 3))
ResNet18DilatedEncoder = functools.partial(
    ResNetEncoder, block="basic", depths=(2, 2, 2, 2), dilate_scale=8)


def stage_channels(encoder: ResNetEncoder) -> tuple[int, ...]:
    """Channels of the four stage outputs (``(256, 512, 1024, 2048)`` for ResNet-50)."""
    mult = 4 if encoder.block == "bottleneck" else 1
    return tuple(p * mult for p in (64, 128, 256, 512))
