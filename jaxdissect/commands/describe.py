"""``jaxdissect describe``: label every unit of a layer with a word from any concept
list, from probe images and an image-text model, no segmentation needed (the method
of CLIP-Dissect: SoftWPMI; ``jaxdissect.experiments.describe``).

Writes ``OUT/describe.html`` (a card per unit: top probe images, open-vocabulary
label, the next concepts), ``OUT/describe.json``, ``OUT/describe.npz`` (the
``DescribeResult``) and ``OUT/cache/``. On data with ground-truth masks (``--data
world``) the same units are also dissected with masks (``OUT/dissect/``) and each
card shows both labels.
"""

from __future__ import annotations

import os

from jaxdissect.commands import _common as C

HELP = "label every unit of a layer with words from any concept list (CLIP-Dissect)"


def add_arguments(p):
    C.add_common(p)
    p.add_argument("--concepts", default=None,
                   help="concept list, a text file with one concept per line (default: the "
                        "shipped world list: the world's words and 50 words it never names)")
    p.add_argument("--imagetext", default="world",
                   help="image-text model: world (the shipped world model) | checkpoint DIR | "
                        "py:MODULE:FACTORY (an object with params, encode_images(params, "
                        "images01), encode_texts(texts))")
    p.add_argument("--data", default="world", help="probe images: world | image folder")
    p.add_argument("--num-images", type=int, default=2000, help="probe images")
    p.add_argument("--seed", type=int, default=None, help="world seed (default: 4)")
    p.add_argument("--method", choices=("softwpmi", "wpmi", "cos3"), default="softwpmi",
                   help="scoring: SoftWPMI (CLIP-Dissect's), or the alternatives its paper "
                        "compares")
    p.add_argument("--top-k", type=int, default=None,
                   help="top images per unit that SoftWPMI/WPMI read (default: 100 / 28)")
    p.add_argument("--lam", type=float, default=None,
                   help="weight of the concept's prior in SoftWPMI/WPMI (default: 1 / 0.6, "
                        "the paper's); on small concept lists with many units of one concept, "
                        "smaller values keep rare words from winning")
    p.add_argument("--pool", choices=("avg", "max"), default="avg",
                   help="a unit's map to one number per image")
    p.add_argument("--no-dissect", action="store_true",
                   help="skip the mask-based dissection beside the labels (run by default "
                        "with --segmenter, or the data's ground truth where it has one)")


def _thumbnails(source, res, k: int = 5) -> dict:
    import numpy as np
    strips = {}
    for u in range(res.num_units):
        idx = [int(i) for i in res.top_images[u, :k]]
        imgs = np.stack([source.batch(i, i + 1)["image"][0] for i in idx])
        strips[u] = (imgs, np.ones(imgs.shape[:3], bool))
    return strips


@C.writes_results
def run(args) -> int:
    from jaxdissect import report
    from jaxdissect.experiments.describe import compare, describe_spec
    from jaxdissect.imagetext import load_imagetext, read_concepts
    from jaxdissect.report.describe import write_describe
    from jaxdissect.world.imagetext import default_concepts, distractors

    C.check_positive(num_images=args.num_images, batch_size=args.batch_size, top_k=args.top_k)
    concepts = read_concepts(args.concepts) if args.concepts else default_concepts()
    loaded = C.load_model(args.model)
    layer = args.layer or loaded.default_layer
    C.check_layer(loaded, layer)
    seed = C.WORLD_VAL_SEED if args.seed is None else args.seed
    source = C.load_data(args.data, loaded, args.num_images, seed)
    imagetext = load_imagetext(args.imagetext)
    out = C.results(args, "describe", args.out or os.path.join("results", "-".join(
        (os.path.basename(loaded.name.rstrip("/")), layer, "describe"))))
    dissected = None
    has_truth = getattr(source, "seg_labels", None) is not None
    seg_name = args.segmenter or ("truth" if has_truth else None)
    if not args.no_dissect and seg_name is not None:
        dissected, _ = C.run_dissection(
            loaded, source, C.load_segmenter(seg_name, source, loaded), layer,
            os.path.join(out, "dissect"), quantile=args.quantile, miniou=args.miniou,
            batch_size=args.batch_size, progress=not args.no_progress,
            data_name=f"{args.data}@{seed}", seg_name=seg_name,
            seg_downsample=C.seg_downsample(args, seg_name), upsample=args.upsample,
            model_spec=args.model)
    if args.method == "cos3" and (args.top_k is not None or args.lam is not None):
        raise C.UserError("--top-k and --lam are options of softwpmi and wpmi, not cos3")
    options = {k: v for k, v in (("top_k", args.top_k), ("lam", args.lam)) if v is not None}
    res = describe_spec(loaded, layer, source, imagetext, concepts, method=args.method,
                        pool=args.pool, batch_size=args.batch_size,
                        cache_dir=os.path.join(out, "cache"),
                        cache_key={"data": f"{args.data}@{seed}"},
                        progress=not args.no_progress, **options)
    if not C.hosts.is_writer():
        return 0
    res.save(os.path.join(out, "describe.npz"))
    paths = report.write_unit_thumbnails(out, _thumbnails(source, res), subdir="top")
    units = res.units()
    comparison = None
    if dissected is not None:
        comparison = compare(res, dissected, distractors(concepts))
        for rec, pair in zip(units, comparison["pairs"]):
            rec.update(dissect_label=pair["dissect"], agree=pair["agree"],
                       dissect_iou=float(dissected.best_iou[rec["unit"]]))
        comparison = {k: v for k, v in comparison.items() if k != "pairs"}
    for rec in units:
        rec["image"] = paths.get(rec["unit"])
    path = write_describe(out, {
        "model": loaded.name, "layer": layer, "data": f"{args.data}@{seed}",
        "num_images": source.num_examples, "imagetext": args.imagetext,
        "method": res.method, "options": res.options, "concepts": res.concepts,
        "units": units, "comparison": comparison})
    print(f"{loaded.name} {layer}: {res.num_units} units described with {len(concepts)} "
          f"concepts ({len(set(res.labels()))} distinct labels)")
    if comparison is not None:
        print(f"agreement with mask-based labels: {comparison['agree']}/"
              f"{comparison['labelled']} labelled units ({100 * comparison['rate']:.1f}%); "
              f"distractor labels: {comparison['distractor_wins']}/{comparison['units']}")
    print(C.final_path(path))
    return 0
