"""The synthetic scene world: a renderer with ground-truth concepts, and the small
classifier, segmenter and generator trained on it (shipped in ``weights/world``).

``WorldSource`` is an ordinary ``ImageSource``; ``LABELS`` is its vocabulary
(object, part, material, colour); ``CLASS_NAMES`` its scene classes.
``load_classifier()`` -> ``(model, params)`` and ``load_segmenter()`` -> a
``Segmenter`` read the shipped weights (their modules are imported on first use).
"""

from jaxdissect.world.scenes import CLASS_NAMES
from jaxdissect.world.source import WorldSource, render, render_closeup
from jaxdissect.world.vocab import COLORS, LABELS, LAYERS, MATERIALS, OBJECTS, PARTS

__all__ = ["CLASS_NAMES", "COLORS", "LABELS", "LAYERS", "MATERIALS", "OBJECTS", "PARTS",
           "WorldSource", "load_classifier", "load_segmenter", "render", "render_closeup"]


def __getattr__(name):
    if name == "load_classifier":
        from jaxdissect.world.classifier import load_classifier
        return load_classifier
    if name == "load_segmenter":
        from jaxdissect.world.segmenter import load_segmenter
        return load_segmenter
    raise AttributeError(f"module 'jaxdissect.world' has no attribute {name!r}")
