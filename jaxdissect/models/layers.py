"""Small layers whose outputs are the activations researchers name.

A tap (:mod:`jaxdissect.taps`) is a module's output, so an activation worth naming
must be one: ``ConvReLU`` is ``nn.Conv`` followed by ReLU with the same parameters
(``kernel``, ``bias``), so checkpoints keep loading, and its output is the rectified
value the reference's in-place ReLUs record; ``MaxPool`` makes a pooling layer a
(parameter-free) module.
"""

from __future__ import annotations

import flax.linen as nn


class ConvReLU(nn.Conv):
    """``relu(conv(x))`` with ``nn.Conv``'s parameters and options."""

    def __call__(self, x):
        return nn.relu(super().__call__(x))


class MaxPool(nn.Module):
    """``nn.max_pool`` with a ``window x window`` window and ``stride``, NHWC."""

    window: int = 2
    stride: int = 2

    def __call__(self, x):
        return nn.max_pool(x, (self.window, self.window), strides=(self.stride, self.stride))
