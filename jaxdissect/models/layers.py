"""Small layers whose outputs are the activations researchers name.

A tap (:mod:`jaxdissect.taps`) is a module's output, so an activation worth naming
must be one: ``ConvReLU`` is ``nn.Conv`` followed by ReLU with the same parameters
(``kernel``, ``bias``), so checkpoints keep loading, and its output is the rectified
value the reference's in-place ReLUs record; ``MaxPool``, ``ReLU`` and
``GlobalAvgPool`` make parameter-free operations modules with paths of their own, as
they have names in the PyTorch models they mirror (torchvision's ``maxpool``,
``relu``, ``avgpool``). All arrays are NHWC.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class ConvReLU(nn.Conv):
    """``relu(conv(x))`` with ``nn.Conv``'s parameters and options."""

    def __call__(self, x):
        return nn.relu(super().__call__(x))


class MaxPool(nn.Module):
    """PyTorch ``MaxPool2d(window, stride, padding)``: floor mode, padding never wins.
    ``[b, h, w, c] -> [b, h', w', c]``."""

    window: int = 2
    stride: int = 2
    padding: int = 0

    def __call__(self, x):
        p = self.padding
        return nn.max_pool(x, (self.window, self.window), strides=(self.stride, self.stride),
                           padding=((p, p), (p, p)))


class ReLU(nn.Module):
    """``max(x, 0)``, any shape."""

    def __call__(self, x):
        return nn.relu(x)


class GlobalAvgPool(nn.Module):
    """Mean over positions, kept as a 1x1 map as PyTorch's ``AdaptiveAvgPool2d(1)``
    keeps it: ``[b, h, w, c] -> [b, 1, 1, c]``."""

    def __call__(self, x):
        return jnp.mean(x, axis=(1, 2), keepdims=True)


def flatten_nchw(x):
    """``[b, h, w, c] -> [b, c*h*w]`` in PyTorch's channel-major order (what a
    ``[out, c*h*w]`` fully connected weight converted from PyTorch expects)."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
