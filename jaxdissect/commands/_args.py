"""The options the experiment commands share; their defaults come from
``jaxdissect.pipeline.config`` (stated once). Options whose default depends on the model
have none here (``argparse.SUPPRESS``): the pipeline resolves them."""

from __future__ import annotations

import argparse

from jaxdissect.pipeline.config import parse_batch_size
from jaxdissect.runtime import hosts

MODEL_HELP = ("world | world-classifier | world-generator | py:MODULE:FACTORY (a function "
              "returning a jaxdissect.spec.ModelSpec or a torch module) | registry name | "
              "FILE.pth | FILE.safetensors | checkpoint DIR | torchvision:NAME | timm:NAME")


def default(config: str, name: str):
    """The default of ``name`` in ``pipeline.config``'s class ``config`` (importing the
    configuration module imports no JAX)."""
    from jaxdissect.pipeline import config as K
    return K.default(getattr(K, config), name)


def add_common(p, config: str):
    """The model, layer, segmenter, threshold and output options of ``config``."""
    d = lambda name: default(config, name)  # noqa: E731
    p.add_argument("--model", default=d("model"), help=MODEL_HELP)
    p.add_argument("--weights", default=argparse.SUPPRESS, help="torchvision:/timm: "
                   "models: random or a FILE.safetensors / .pth (default: published)")
    p.add_argument("--upsample", choices=("plain", "receptive-field"),
                   default=argparse.SUPPRESS,
                   help="how a layer's map is brought to the segmentation grid (default: "
                        "the model's own; plain stretch for VGG-16 and generators, as "
                        "the reference)")
    p.add_argument("--layer", default=argparse.SUPPRESS,
                   help="layer to dissect/edit (default: the model's default_layer: conv5_3 "
                        "for the world classifier and VGG-16, layer4 for the world "
                        "generator, ResNets and Progressive GANs, conv5 for AlexNet, the "
                        "last encoder layer for ViT)")
    p.add_argument("--segmenter", default=argparse.SUPPRESS,
                   help="truth | world | netpqc (reference segmenters) | broden (the "
                        "annotation of --data broden:DIR); default: truth for world images, "
                        "broden for Broden, world for the world generator, netpqc otherwise")
    p.add_argument("--quantile", type=float, default=d("quantile"),
                   help="top quantile for thresholds")
    p.add_argument("--miniou", type=float, default=d("miniou"),
                   help="IoU needed to label a unit")
    p.add_argument("--seg-downsample", type=int, default=argparse.SUPPRESS,
                   help="dissect on every d-th segmentation pixel (block centres); default 4 "
                        "for the world's full-size ground truth and world segmenter (the "
                        "reference dissects on a quarter-size grid), else 1")
    p.add_argument("--batch-size", type=parse_batch_size, default=d("batch_size"),
                   help="inputs per compiled step; dissect also takes auto: the largest "
                        "that fits the device's memory")
    p.add_argument("--out", default=argparse.SUPPRESS, help="results folder (default: a "
                   "folder under results/ named after the command, model and layer)")
    add_force(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    hosts.add_arguments(p)
    p.set_defaults(distributed=True)


def add_force(p):
    p.add_argument("--force", action="store_true", help="replace --out even if it holds "
                   "another command's results or files jaxdissect did not write")

