"""``jaxdissect describe``: label every unit of a layer with a word from any concept
list, from probe images and an image-text model, no segmentation needed (the method of
CLIP-Dissect: SoftWPMI; ``jaxdissect.pipeline.description``).

Writes ``OUT/describe.html`` (a card per unit: top probe images, open-vocabulary label,
the next concepts), ``OUT/describe.json``, ``OUT/describe.npz`` and ``OUT/cache/``. On
data with ground-truth masks (``--data world``) the same units are also dissected with
masks (``OUT/dissect/``) and each card shows both labels.
"""

from __future__ import annotations

import argparse

from jaxdissect.commands._args import add_common, default

HELP = "label every unit of a layer with words from any concept list (CLIP-Dissect)"


def add_arguments(p):
    add_common(p, "DescribeConfig")
    d = lambda name: default("DescribeConfig", name)  # noqa: E731
    p.add_argument("--concepts", default=argparse.SUPPRESS,
                   help="concept list, a text file with one concept per line (default: the "
                        "shipped world list: the world's words and 50 words it never names)")
    p.add_argument("--imagetext", default=d("imagetext"),
                   help="image-text model: world (the shipped world model) | checkpoint DIR | "
                        "hf:NAME (a Hugging Face CLIPModel by hub name or folder, e.g. "
                        "hf:openai/clip-vit-base-patch32) | py:MODULE:FACTORY (an object "
                        "with params, encode_images(params, images01), encode_texts(texts))")
    p.add_argument("--data", default=d("data"), help="probe images: world | image folder")
    p.add_argument("--num-images", type=int, default=d("num_images"), help="probe images")
    p.add_argument("--seed", type=int, default=argparse.SUPPRESS,
                   help="world seed (default: 4)")
    p.add_argument("--method", choices=("softwpmi", "wpmi", "cos3"), default=d("method"),
                   help="scoring: SoftWPMI (CLIP-Dissect's), or the alternatives its paper "
                        "compares")
    p.add_argument("--top-k", type=int, default=argparse.SUPPRESS,
                   help="top images per unit that SoftWPMI/WPMI read (default: 100 / 28)")
    p.add_argument("--lam", type=float, default=argparse.SUPPRESS,
                   help="weight of the concept's prior in SoftWPMI/WPMI (default: 1 / 0.6, "
                        "the paper's); on small concept lists with many units of one concept, "
                        "smaller values keep rare words from winning")
    p.add_argument("--pool", choices=("avg", "max"), default=d("pool"),
                   help="a unit's map to one number per image")
    p.add_argument("--no-dissect", action="store_true",
                   help="skip the mask-based dissection beside the labels")


def run(args) -> int:
    from jaxdissect.pipeline.config import DescribeConfig, from_args
    from jaxdissect.pipeline.description import run_describe
    o = run_describe(from_args(DescribeConfig, args))
    if o.report is None:  # not the writing process
        return 0
    res, c = o.result, o.comparison
    print(f"{o.model.name} {o.layer}: {res.num_units} units described with "
          f"{len(o.concepts)} concepts ({len(set(res.labels()))} distinct labels)")
    if c is not None:
        print(f"agreement with mask-based labels: {c['agree']}/{c['labelled']} labelled "
              f"units ({100 * c['rate']:.1f}%); distractor labels: "
              f"{c['distractor_wins']}/{c['units']}")
    print(o.report)
    return 0
