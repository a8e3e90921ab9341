"""A semantic segmenter such as the reference's colour model (``SemanticSegmenter``).

Input ``[b, H, W, 3]`` RGB in [0, 1]; reversed to BGR if ``labels.json`` says so,
then ``(x - mean) / stdev``. For each size in ``segsizes``: adaptive average
pooling to ``s x s`` (unless already that size), the network, bilinear resize of
the logits to ``(H // downsample, W // downsample)``, a softmax over all channels
(the reference decoder's inference output) and then, as the reference does, a
second softmax within each category's channels; the results are summed over
sizes. Labels follow :func:`jaxdissect.segmentation.rules.semantic_labels`. The
quadrant split is not offered for these segmenters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.models.ppm import DilatedPPMNet
from jaxdissect.models.resample import adaptive_avg_pool, bilinear_resize
from jaxdissect.segmentation.labeldata import SemanticLabelData
from jaxdissect.segmentation.rules import semantic_labels, semantic_plan
from jaxdissect.segmentation.unified import check_images


class SemanticSegmenter:
    """Segmenter protocol over :class:`~jaxdissect.models.ppm.DilatedPPMNet`.

    ``segmenter(images [b, H, W, 3] in [0, 1])`` -> ``[b, num_categories, H/d, W/d]`` int32.
    """

    def __init__(self, data: SemanticLabelData, params, downsample: int = 1,
                 segsizes=None):
        if downsample < 1:
            raise ValueError(f"downsample must be >= 1, not {downsample}")
        self.data = data
        # on the device once, not copied from host memory at every call
        self.params = jax.device_put(params)
        self.downsample = int(downsample)
        self.segsizes = tuple(segsizes) if segsizes is not None else data.segsizes
        self.plan = semantic_plan(data)
        self.labels = self.plan.labels
        self.categories = self.plan.categories
        self.num_layers = self.plan.num_layers
        self.model = DilatedPPMNet(len(data.labels))
        self._jit = jax.jit(self.apply)

    def preprocess(self, images01):
        x = images01[..., ::-1] if self.data.bgr else images01
        mean = jnp.asarray(self.data.mean, x.dtype).reshape(1, 1, 1, 3)
        return (x - mean) / jnp.asarray(self.data.stdev, x.dtype).reshape(1, 1, 1, 3)

    def scores(self, params, images01):
        """Summed per-category scores ``[b, H/d, W/d, channels]``."""
        grid = check_images(images01, self.downsample)
        x = self.preprocess(images01)
        total = 0.0
        for s in self.segsizes:
            logits = self.model.apply({"params": params}, adaptive_avg_pool(x, (s, s)))
            p = jax.nn.softmax(bilinear_resize(logits, grid), axis=-1)
            out = jnp.zeros_like(p)  # channels in no category stay 0
            for ch in self.plan.channels:
                idx = jnp.asarray(np.asarray(ch, np.int32))
                out = out.at[..., idx].set(jax.nn.softmax(p[..., idx], axis=-1))
            total = total + out
        return total

    def apply(self, params, images01):
        """Pure function: ``[b, H, W, 3]`` -> ``[b, num_categories, H/d, W/d]`` int32."""
        return semantic_labels(self.plan, self.scores(params, images01))

    def __call__(self, images01):
        return self._jit(self.params, jnp.asarray(images01, jnp.float32))
