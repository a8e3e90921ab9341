"""Small named layers, so that every activation a researcher names is the output of a
submodule (taps see module outputs by path: ``jaxdissect.taps``).

A parameter-free operation (ReLU, pooling) is a module here so that it has a path of
its own, as it has a name in the PyTorch model it mirrors (``relu``, ``maxpool``,
``avgpool``). ``ConvReLU`` / ``LinearReLU`` are convolution / fully connected layers
whose output is rectified, with the parameter tree of the plain layer: the reference's
in-place ReLU means a hook on ``conv5`` records the rectified value, and so does a tap
here. All arrays are NHWC.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxdissect.models.vgg16 import LinearOI


class ReLU(nn.Module):
    """``max(x, 0)``, any shape."""

    def __call__(self, x):
        return nn.relu(x)


class MaxPool(nn.Module):
    """PyTorch ``MaxPool2d(window, stride, padding)`` (floor mode; padding never wins).
    ``[b, h, w, c] -> [b, h', w', c]``."""

    window: int
    stride: int
    padding: int = 0

    def __call__(self, x):
        p = self.padding
        return nn.max_pool(x, (self.window, self.window), strides=(self.stride, self.stride),
                           padding=((p, p), (p, p)))


class GlobalAvgPool(nn.Module):
    """Mean over positions, kept as a 1x1 map as PyTorch's ``AdaptiveAvgPool2d(1)``
    keeps it: ``[b, h, w, c] -> [b, 1, 1, c]``."""

    def __call__(self, x):
        return jnp.mean(x, axis=(1, 2), keepdims=True)


class ConvReLU(nn.Conv):
    """``nn.Conv`` followed by ReLU; parameters ``kernel`` (HWIO) and ``bias`` as
    ``nn.Conv``'s."""

    def __call__(self, x):
        return nn.relu(super().__call__(x))


class LinearReLU(LinearOI):
    """:class:`~jaxdissect.models.vgg16.LinearOI` followed by ReLU; parameters
    ``weight`` ``[out, in]`` and ``bias``."""

    def __call__(self, x):
        return nn.relu(super().__call__(x))


def flatten_nchw(x):
    """``[b, h, w, c] -> [b, c*h*w]`` in PyTorch's channel-major order (what a
    ``[out, c*h*w]`` fully connected weight converted from PyTorch expects)."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
