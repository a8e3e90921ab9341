"""Several segmenters as one, with one vocabulary (reference ``MergedSegmenter``).

Layers are concatenated in order. Labels of component ``i`` are shifted by the
number of labels before it, exactly as the reference numbers them, so every
concept keeps the reference's label number. The reference also shifts a
component's "no label" 0, which would make a concept of nothing; here 0 stays 0,
and the slot the reference gives it is kept as an unused placeholder ``"-"``
(category: that component's first category) so the numbering does not move.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxdissect.labels import LabelSet


class MergedSegmenter:
    """``segmenter(images)`` -> ``[b, sum K_i, H/d, W/d]`` int32 in the merged vocabulary."""

    def __init__(self, components: Sequence):
        if not components:
            raise ValueError("MergedSegmenter needs at least one segmenter")
        self.components = tuple(components)
        names, cats, offsets, categories = [], [], [], []
        for i, seg in enumerate(self.components):
            offsets.append(len(names))
            comp_cats = tuple(getattr(seg, "categories", seg.labels.category_names))
            if i == 0:
                names += list(seg.labels.names)
                cats += list(seg.labels.categories)
            else:
                names += ["-"] + list(seg.labels.names[1:])
                cats += [comp_cats[0] if comp_cats else ""] + list(seg.labels.categories[1:])
            categories += [c for c in comp_cats if c not in categories]
        self.offsets = tuple(offsets)
        self.labels = LabelSet(tuple(names), tuple(cats))
        self.categories = tuple(categories)
        self.num_layers = sum(seg.num_layers for seg in self.components)
        self.params = tuple(seg.params for seg in self.components)
        self._jit = jax.jit(self.apply)

    def apply(self, params, images01):
        """Pure function of all components' params (a tuple, in order)."""
        layers = []
        for seg, p, off in zip(self.components, params, self.offsets):
            out = seg.apply(p, images01)
            layers.append(jnp.where(out > 0, out + off, 0))
        return jnp.concatenate(layers, axis=1)

    def __call__(self, images01):
        return self._jit(self.params, jnp.asarray(images01, jnp.float32))
