"""Flax models with the reference's research layer names (see the model call contract)."""

from jaxdissect.models.proggan import (  # noqa: F401
    SIZES_BY_RESOLUTION,
    ProgressiveGenerator,
    ProgressiveGeneratorFor,
)
from jaxdissect.models.vgg16 import (  # noqa: F401
    VGG16,
    VGG16ImageNet,
    VGG16Places365,
    preprocess,
)
