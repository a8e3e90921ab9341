"""``jaxdissect dissect``: label every unit of a layer with the concept it detects.

Writes ``OUT/report.html`` (unit cards with top images, sortable and filterable),
``OUT/concepts.svg``, ``OUT/report.json``, ``OUT/iou.npy``, ``OUT/tally.csv`` (the
original NetDissect's per-unit table) and ``OUT/cache/`` (the passes it resumes from;
re-running with the same arguments reuses them). ``--data broden:DIR --segmenter
broden`` dissects on Broden, ``--iou-rule netdissect`` with NetDissect's union.
"""

from __future__ import annotations

import os

from jaxdissect.commands import _common as C

HELP = "dissect one layer of a classifier or generator: unit labels, IoU, HTML report"


def add_arguments(p):
    C.add_common(p)
    p.add_argument("--data", default=None,
                   help="world | image folder (Places layout) | tfds:places365_small | "
                        "broden:DIR (Broden layout) | z (default: world for classifiers, z "
                        "for generators)")
    p.add_argument("--num-images", type=int, default=None,
                   help="images / z samples (default: 2000 world images, all folder images, "
                        "10000 z samples)")
    p.add_argument("--seed", type=int, default=None,
                   help="world seed or z seed (default: 4 for world images, 1 for z)")
    p.add_argument("--topk", type=int, default=5, help="top images per unit card")
    p.add_argument("--iou-rule", choices=("pnas", "netdissect"), default="pnas",
                   help="IoU union: the PNAS paper's (default), or the original "
                        "NetDissect's, counting a unit only in images where it touches the "
                        "label's category")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out a folder's unreadable images (counted in the report) "
                        "instead of stopping at the first")
    p.add_argument("--significance", action="store_true",
                   help="test every label: a p-value against image permutations (the unit's "
                        "maps paired with other images' segmentations) and a bootstrap "
                        "interval of its IoU, in one more pass over the data")
    p.add_argument("--max-p", type=float, default=None,
                   help="keep only labels with a p-value at most this (implies "
                        "--significance; default: every label is kept)")
    p.add_argument("--permutations", type=int, default=1000,
                   help="image permutations per label test (the smallest p-value is "
                        "1/(permutations+1))")


def resolve(args):
    """Model, layer, source, segmenter and results folder from the arguments."""
    C.check_positive(num_images=args.num_images, batch_size=args.batch_size, topk=args.topk)
    if not 0 < args.quantile < 1:
        raise C.UserError(f"--quantile must be in (0, 1), got {args.quantile}")
    if not 0 < args.miniou < 1:
        raise C.UserError(f"--miniou must be in (0, 1), got {args.miniou}")
    if args.max_p is not None and not 0 < args.max_p <= 1:
        raise C.UserError(f"--max-p must be in (0, 1], got {args.max_p}")
    C.check_positive(permutations=args.permutations)
    if (args.significance or args.max_p is not None) and args.iou_rule != "pnas":
        raise C.UserError("--significance and --max-p test the pnas IoU rule; drop "
                          "--iou-rule netdissect")
    loaded = C.load_model(args.model, args.weights)
    layer = args.layer or loaded.default_layer
    data = args.data or ("z" if loaded.kind == "generator" else "world")
    args.data = data
    seed = args.seed if args.seed is not None else (
        1 if loaded.kind == "generator" else C.WORLD_VAL_SEED)
    source = C.load_data(data, loaded, args.num_images, seed, skip_bad=args.skip_bad_images)
    seg_name = C.default_segmenter(args, loaded)
    segmenter = C.load_segmenter(seg_name, source, loaded)
    out = args.out or os.path.join("results", "-".join(
        s.replace("/", "_").replace(":", "_") for s in (
            os.path.basename(loaded.name.rstrip("/")), layer, os.path.basename(
                data.rstrip("/")), seg_name)))
    return loaded, layer, source, segmenter, seg_name, f"{data}@{seed}", out


@C.writes_results
def run(args) -> int:
    loaded, layer, source, segmenter, seg_name, data_name, out = resolve(args)
    out = C.results(args, "dissect", out)
    res, path = C.run_dissection(
        loaded, source, segmenter, layer, out, quantile=args.quantile, miniou=args.miniou,
        batch_size=args.batch_size, topk=args.topk, progress=not args.no_progress,
        data_name=data_name, seg_name=seg_name, seg_downsample=C.seg_downsample(args, seg_name),
        upsample=args.upsample, iou_rule=args.iou_rule, model_spec=args.model,
        significance=args.significance, max_p=args.max_p, permutations=args.permutations)
    if path is None:  # not the writing process (several processes, see --coordinator)
        return 0
    n = int(res.labelled.sum())
    concepts = len({res.best_label[u] for u in range(res.num_units) if res.labelled[u]})
    rule = f"IoU > {args.miniou}" + ("" if args.max_p is None else f", p <= {args.max_p:g}")
    print(f"{loaded.name} {layer}: {n}/{res.num_units} units labelled ({rule}), "
          f"{concepts} distinct concepts")
    if res.significance is not None:
        sig = res.significance
        print(f"significance: {int(sig.discoveries(0.01).sum())}/{len(sig.units)} tested "
              f"labels survive a 1% false-discovery rate ({sig.permutations} permutations)")
    print(C.final_path(path))
    return 0
