"""A small U-Net segmenter with one classification head per label layer.

``SegNet(widths=(16, 32, 64, 96), head_sizes=(22, 12, 11))`` maps ``[b, H, W, 3]``
images in [0, 1] (H, W divisible by 8) to logits ``[b, H, W, sum(head_sizes)]``:
the first ``head_sizes[0]`` channels score the first layer's classes (class 0 =
none), and so on. Layers, in order: ``enc1`` .. ``enc4`` (encoder stages at
full, 1/2, 1/4, 1/8 resolution), ``dec3`` .. ``dec1`` (decoder stages back up to
full resolution, each joined to the encoder stage of its size), ``logits``.

Call contract: ``capture`` and ``edits`` work at every layer; ``stop=L`` returns
L's output. Because the decoder reads the encoder's skip connections, a forward
pass cannot resume from a middle layer: ``start`` is accepted only as ``None``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdissect.edits import Edits
from jaxdissect.models.sequence import broadcast_edit, check_call


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

    @nn.compact
    def __call__(self, x: jnp.ndarray, capture=(), edits: Edits | None = None,
                 start: str | None = None, stop: str | None = None):
        names = self.layer_names
        capture = check_call(names, capture, edits, None, stop)
        if start is not None:
            raise ValueError("SegNet cannot start from a middle layer: its decoder needs the "
                             "encoder's skip connections; pass start=None")
        m = 2 ** (len(self.widths) - 1)
        if x.ndim != 4 or x.shape[1] % m or x.shape[2] % m:
            raise ValueError(f"SegNet wants [b, H, W, 3] images with H, W divisible by {m}, "
                             f"got shape {x.shape}")
        acts: dict[str, jax.Array] = {}

        def done(name, h):
            if edits and name in edits:
                e = broadcast_edit(edits[name], h.shape)
                h = h * (1 - e.alpha) + e.value * e.alpha
            if name in capture:
                acts[name] = h
            return h

        def conv(h, width, name):
            return nn.relu(nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), name=name)(h))

        h = x * 2.0 - 1.0
        skips = []
        for i, width in enumerate(self.widths, start=1):
            if i > 1:
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
            h = conv(conv(h, width, f"enc{i}_a"), width, f"enc{i}_b")
            h = done(f"enc{i}", h)
            if stop == f"enc{i}":
                return h, acts
            skips.append(h)
        for i in range(len(self.widths) - 1, 0, -1):
            h = jnp.concatenate([_upsample2(h), skips[i - 1]], axis=-1)
            h = done(f"dec{i}", conv(h, self.widths[i - 1], f"dec{i}"))
            if stop == f"dec{i}":
                return h, acts
        h = nn.Conv(sum(self.head_sizes), (1, 1), name="head")(h)
        return done("logits", h), acts

    def split_heads(self, logits: jnp.ndarray) -> list[jnp.ndarray]:
        """``[..., sum(head_sizes)]`` -> one ``[..., head_sizes[k]]`` array per head."""
        out, a = [], 0
        for n in self.head_sizes:
            out.append(logits[..., a:a + n])
            a += n
        return out
