"""Flax models with the reference's research layer names: each named activation is a
submodule's output, captured and edited from outside by :mod:`jaxdissect.taps`.

One module per architecture (``vgg16``, ``proggan``, ``tv_resnet``, ``alexnet``,
``vit``): the Flax module, its state-dict conversion, its spec and fast paths, and the
:class:`~jaxdissect.checkpoints.architectures.Architecture` it registers; every module
of this package is imported when the registry is first used. The segmenters' nets
(``resnet``, ``upernet``, ``ppm``, ``segnet``, ``resample``, ``segmenter_convert``)
register nothing."""

from jaxdissect.models.alexnet import AlexNet, AlexNetPlaces365, AlexNetTorchvision  # noqa: F401
from jaxdissect.models.proggan import (  # noqa: F401
    SIZES_BY_RESOLUTION,
    ProgressiveGenerator,
    ProgressiveGeneratorFor,
)
from jaxdissect.models.tv_resnet import (  # noqa: F401
    ResNet,
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet101,
    ResNet152,
)
from jaxdissect.models.vgg16 import (  # noqa: F401
    VGG16,
    VGG16ImageNet,
    VGG16Places365,
    preprocess,
)
from jaxdissect.models.vit import ViT, ViT_B_16, ViT_B_32, ViT_L_16  # noqa: F401
