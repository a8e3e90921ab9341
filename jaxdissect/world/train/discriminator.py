"""A small ProgressiveGAN-style discriminator, used only to train world generators.

Mirror image of the generator: a 1x1 "from RGB" convolution, then at each
resolution two 3x3 convolutions and a 2x average-pool down to 4x4, a minibatch
standard-deviation feature (Karras et al. 2018, sec. 3), a 3x3 convolution, and a
dense layer to one logit per image. Every weight uses the equalised learning rate
of ProgressiveGAN (unit-normal weights scaled by ``gain / sqrt(fan_in)`` at run
time), so Adam with one learning rate suits every layer, as in the generator.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class EqualizedConv(nn.Module):
    """``[b, h, w, cin] -> [b, h, w, features]``, 'SAME' padding, equalised lr."""

    features: int
    kernel_size: int = 3
    gain: float = math.sqrt(2.0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, cin = self.kernel_size, x.shape[-1]
        w = self.param("kernel", nn.initializers.normal(1.0), (k, k, cin, self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        scale = self.gain / math.sqrt(k * k * cin)
        y = jax.lax.conv_general_dilated(x, w * scale, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + b.reshape(1, 1, 1, -1)


class EqualizedDense(nn.Module):
    """``[b, n] -> [b, features]`` with equalised lr."""

    features: int
    gain: float = math.sqrt(2.0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param("kernel", nn.initializers.normal(1.0), (x.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        return x @ (w * (self.gain / math.sqrt(x.shape[-1]))) + b[None, :]


def minibatch_stddev(x: jax.Array, group_size: int = 4) -> jax.Array:
    """Append one channel: the mean over features and positions of the per-group
    standard deviation across examples. ``[b, h, w, c] -> [b, h, w, c + 1]``; ``b`` must
    be divisible by ``min(group_size, b)``."""
    b, h, w, c = x.shape
    g = min(group_size, b)
    if b % g:
        raise ValueError(f"minibatch_stddev: batch {b} not divisible by group size {g}")
    y = x.reshape(g, b // g, h, w, c)
    sd = jnp.sqrt(jnp.var(y, axis=0) + 1e-8)                  # [b/g, h, w, c]
    s = jnp.mean(sd, axis=(1, 2, 3))                          # [b/g]
    s = jnp.tile(s, g).reshape(b, 1, 1, 1)                    # example i is in group i % (b/g)
    return jnp.concatenate([x, jnp.broadcast_to(s, (b, h, w, 1))], axis=-1)


class Discriminator(nn.Module):
    """``images [b, R, R, 3]`` in [-1, 1] -> logits ``[b]``.

    ``widths[i]`` is the depth at resolution ``R / 2**i``; the last entry is the
    depth at 4x4, so ``R == 4 * 2**(len(widths) - 1)``.
    """

    widths: Sequence[int] = (32, 64, 128, 128)
    mbstd_group: int = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        r = 4 * 2 ** (len(self.widths) - 1)
        if x.ndim != 4 or x.shape[1:] != (r, r, 3):
            raise ValueError(f"Discriminator{tuple(self.widths)} expects [b, {r}, {r}, 3] "
                             f"images, got shape {x.shape}")
        act = lambda y: nn.leaky_relu(y, 0.2)
        x = act(EqualizedConv(self.widths[0], 1, name="from_rgb")(x))
        for i, (w_in, w_out) in enumerate(zip(self.widths[:-1], self.widths[1:])):
            x = act(EqualizedConv(w_in, name=f"conv{i}a")(x))
            x = act(EqualizedConv(w_out, name=f"conv{i}b")(x))
            x = nn.avg_pool(x, (2, 2), (2, 2))
        x = minibatch_stddev(x, self.mbstd_group)
        x = act(EqualizedConv(self.widths[-1], name="conv_4x4")(x))
        x = act(EqualizedDense(self.widths[-1], name="dense")(x.reshape(x.shape[0], -1)))
        return EqualizedDense(1, gain=1.0, name="logit")(x)[:, 0]
