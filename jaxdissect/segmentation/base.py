"""The segmenter protocol: images in, multi-label segmentation out.

Implemented by the world segmenter (``jaxdissect.world``) and the ports of the
reference's unified-parsing and colour segmenters (``jaxdissect.models``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax

from jaxdissect.labels import LabelSet


@runtime_checkable
class Segmenter(Protocol):
    #: vocabulary of the returned label values
    labels: LabelSet
    #: K, the number of labels per pixel (object, part, material, colour, ...)
    num_layers: int

    def __call__(self, images: jax.Array) -> jax.Array:
        """``images`` ``[b, H, W, 3]`` float RGB in [0, 1] -> ``[b, K, Hs, Ws]`` int32."""
        ...
