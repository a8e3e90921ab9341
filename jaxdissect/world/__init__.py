"""The synthetic scene world: a renderer with ground-truth concepts, and the small
classifier, segmenter and generator trained on it (shipped in ``weights/world``).

``WorldSource`` is an ordinary ``ImageSource``; ``LABELS`` is its vocabulary
(object, part, material, colour); ``CLASS_NAMES`` its scene classes.
"""

from jaxdissect.world.scenes import CLASS_NAMES
from jaxdissect.world.source import WorldSource, render
from jaxdissect.world.vocab import COLORS, LABELS, LAYERS, MATERIALS, OBJECTS, PARTS

__all__ = ["CLASS_NAMES", "COLORS", "LABELS", "LAYERS", "MATERIALS", "OBJECTS", "PARTS",
           "WorldSource", "render"]
