"""The unified-parsing segmenter: objects, parts, materials (reference ``UnifiedParsingSegmenter``).

Input ``[b, H, W, 3]`` RGB in [0, 1]. As the reference: scale to 0..255, reverse
to BGR, subtract the BGR means ``(102.9801, 115.9465, 122.7717)`` (no division);
for each size ``s`` in ``segsizes`` resize to ``s x s`` by adaptive average
pooling (unless already that size), run the network, resize the logits
bilinearly to the segmentation grid ``(H // downsample, W // downsample)`` and take
softmaxes (objects, materials; parts per owning object); sum over sizes. Labels
then follow :mod:`jaxdissect.segmentation.rules`.

Parts are paired with their owner by object (the part head's channel groups are
ordered by object index). The reference pairs its ``i``-th owner with the
``i``-th group, which is the same thing when the ``object_part`` keys of
``labels.json`` are in object-index order.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxdissect.models.resample import adaptive_avg_pool, bilinear_resize
from jaxdissect.models.upernet import UnifiedParsingNet
from jaxdissect.segmentation.labeldata import UnifiedLabelData
from jaxdissect.segmentation.rules import unified_labels, unified_plan

BGR_MEAN = (102.9801, 115.9465, 122.7717)


def preprocess(images01: jnp.ndarray) -> jnp.ndarray:
    """``[b, H, W, 3]`` RGB in [0, 1] -> BGR, 0..255 scale, mean subtracted."""
    x = images01[..., ::-1] * 255.0
    return x - jnp.asarray(BGR_MEAN, x.dtype).reshape(1, 1, 1, 3)


def check_images(images, downsample: int) -> tuple[int, int]:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [batch, H, W, 3] RGB, got shape {tuple(images.shape)}")
    h, w = images.shape[1:3]
    if h // downsample < 1 or w // downsample < 1:
        raise ValueError(f"downsample={downsample} leaves no pixels of a {h}x{w} image")
    return h // downsample, w // downsample


class UnifiedParsingSegmenter:
    """Segmenter protocol over :class:`~jaxdissect.models.upernet.UnifiedParsingNet`.

    ``segmenter(images [b, H, W, 3] in [0, 1])`` -> ``[b, K, H/d, W/d]`` int32 with
    layers ``object, material, part`` (+ the two quadrant layers if ``quad``).
    """

    def __init__(self, data: UnifiedLabelData, params, segsizes: Sequence[int] = (256,),
                 downsample: int = 1, all_parts: bool = True, quad: bool = False,
                 drop_last_region: bool = True):
        if downsample < 1:
            raise ValueError(f"downsample must be >= 1, not {downsample}")
        self.data = data
        # on the device once, not copied from host memory at every call
        self.params = jax.device_put(params)
        self.segsizes = tuple(int(s) for s in segsizes)
        self.downsample = int(downsample)
        self.plan = unified_plan(data, all_parts=all_parts, quad=quad)
        self.drop_last_region = drop_last_region
        self.labels = self.plan.labels
        self.categories = self.plan.categories
        self.num_layers = self.plan.num_layers
        self.model = UnifiedParsingNet(len(data.object), data.num_part_channels,
                                       len(data.material))
        self._jit = jax.jit(self.apply)

    def scores(self, params, images01):
        """Summed softmax scores on the segmentation grid: ``(object, material, part)``,
        each ``[b, H/d, W/d, n]``; parts are softmaxed within each owner's group."""
        grid = check_images(images01, self.downsample)
        x = preprocess(images01)
        total = None
        for s in self.segsizes:
            xs = adaptive_avg_pool(x, (s, s))
            logits = self.model.apply({"params": params}, xs)
            up = {k: bilinear_resize(v, grid) for k, v in logits.items()}
            part = jnp.concatenate(
                [jax.nn.softmax(up["part"][..., a:b], axis=-1)
                 for _, a, b in self.data.part_blocks], axis=-1)
            now = (jax.nn.softmax(up["object"], axis=-1),
                   jax.nn.softmax(up["material"], axis=-1), part)
            total = now if total is None else tuple(t + n for t, n in zip(total, now))
        return total

    def apply(self, params, images01):
        """Pure function: ``[b, H, W, 3]`` -> ``[b, K, H/d, W/d]`` int32."""
        obj, mat, part = self.scores(params, images01)
        return unified_labels(self.plan, obj, mat, part,
                              drop_last_region=self.drop_last_region)

    def __call__(self, images01):
        return self._jit(self.params, jnp.asarray(images01, jnp.float32))


