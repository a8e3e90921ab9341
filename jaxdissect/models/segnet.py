"""A small U-Net segmenter with one classification head per label layer.

``SegNet(widths=(16, 32, 64, 96), head_sizes=(22, 12, 11))`` maps ``[b, H, W, 3]``
images in [0, 1] (H, W divisible by 8) to logits ``[b, H, W, sum(head_sizes)]``:
the first ``head_sizes[0]`` channels score the first layer's classes (class 0 =
none), and so on. Layers, in order: ``enc1`` .. ``enc4`` (encoder stages at
full, 1/2, 1/4, 1/8 resolution), ``dec3`` .. ``dec1`` (decoder stages back up to
full resolution, each joined to the encoder stage of its size), ``logits``.

Every named layer is a submodule output (``SegNet.layer_paths`` maps the names to
module paths), so :mod:`jaxdissect.taps` captures and edits it; ``feed`` at a
decoder layer still runs the encoder, whose skips the rest of the decoder reads.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxdissect.models.layers import ConvReLU


def _upsample2(x: jnp.ndarray) -> jnp.ndarray:
    """Nearest-neighbour x2: ``[b, h, w, c] -> [b, 2h, 2w, c]``."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class SegNet(nn.Module):
    widths: Sequence[int] = (16, 32, 64, 96)
    head_sizes: Sequence[int] = (22, 12, 11)

    @property
    def layer_names(self) -> tuple[str, ...]:
        n = len(self.widths)
        return (tuple(f"enc{i}" for i in range(1, n + 1))
                + tuple(f"dec{i}" for i in range(n - 1, 0, -1)) + ("logits",))

    @property
    def layer_paths(self) -> dict[str, str]:
        """Research name -> module path: ``enc{i}`` is stage i's second conv (post-ReLU),
        ``logits`` the head."""
        n = len(self.widths)
        return ({f"enc{i}": f"enc{i}_b" for i in range(1, n + 1)}
                | {f"dec{i}": f"dec{i}" for i in range(n - 1, 0, -1)} | {"logits": "head"})

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        m = 2 ** (len(self.widths) - 1)
        if x.ndim != 4 or x.shape[1] % m or x.shape[2] % m:
            raise ValueError(f"SegNet wants [b, H, W, 3] images with H, W divisible by {m}, "
                             f"got shape {x.shape}")

        def conv(h, width, name):
            return ConvReLU(width, (3, 3), padding=((1, 1), (1, 1)), name=name)(h)

        h = x * 2.0 - 1.0
        skips = []
        for i, width in enumerate(self.widths, start=1):
            if i > 1:
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
            h = conv(conv(h, width, f"enc{i}_a"), width, f"enc{i}_b")
            skips.append(h)
        for i in range(len(self.widths) - 1, 0, -1):
            h = jnp.concatenate([_upsample2(h), skips[i - 1]], axis=-1)
            h = conv(h, self.widths[i - 1], f"dec{i}")
        return nn.Conv(sum(self.head_sizes), (1, 1), name="head")(h)

    def split_heads(self, logits: jnp.ndarray) -> list[jnp.ndarray]:
        """``[..., sum(head_sizes)]`` -> one ``[..., head_sizes[k]]`` array per head."""
        out, a = [], 0
        for n in self.head_sizes:
            out.append(logits[..., a:a + n])
            a += n
        return out
