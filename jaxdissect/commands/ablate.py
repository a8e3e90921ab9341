"""``jaxdissect ablate``: what each unit of a classifier layer does for each class.

Dissects the layer (cached, for unit labels and IoU), then runs the paper's
ablation experiment (``jaxdissect.experiments.ablate``): baseline per-class precision, recall
and balanced accuracy; single-unit ablation of every unit on the train split;
each class's k most important units removed / kept on the val split; importance
versus IoU. Writes ``OUT/dissect/`` (unit cards), ``OUT/ablate/ablation.html``
(plots, tables, findings), ``OUT/ablate/ablation.json`` and ``OUT/index.html``.
"""

from __future__ import annotations

import os

from jaxdissect.commands import _common as C

HELP = "classifier unit ablation: per-class importance of units, sets removed/kept"


def add_arguments(p):
    C.add_common(p)
    p.add_argument("--data", default="world",
                   help="world | folder with train/ and val/ class folders | "
                        "tfds:places365_small")
    p.add_argument("--num-images", type=int, default=None,
                   help="val images (default: 2000 world images, all folder images)")
    p.add_argument("--train-images", type=int, default=None,
                   help="train images used to rank units (default: as many as val)")
    p.add_argument("--ks", default="1,2,3,4,5,20,64,128,256",
                   help="set sizes k (comma-separated; capped at the number of units)")
    p.add_argument("--curve-classes", default="",
                   help="classes (names or indices, comma-separated) to chart for every k "
                        "(default: none)")
    p.add_argument("--chunk", type=int, default=64, help="edits per compiled step")


def experiment(loaded, layer, train, val, segmenter, seg_name, out, *, ks, curve_classes,
               quantile, miniou, batch_size, chunk, progress, data_name, index_link=None,
               seg_downsample=1, upsample=None, significance=False):
    """Dissect (with ``significance``, testing its labels), then ablate; returns
    ``(result, dissect report, ablation page)``."""
    from jaxdissect import report
    from jaxdissect.experiments import ablate
    num_classes = loaded.num_classes
    names = loaded.class_names or val.class_names
    if names is None or len(names) != num_classes:
        names = tuple(f"class {i}" for i in range(num_classes))
    curve = []
    for c in curve_classes:
        if c.isdigit():
            curve.append(int(c))
        elif c in names:
            curve.append(names.index(c))
        else:
            raise C.UserError(f"--curve-classes: unknown class {c!r}")
        if curve[-1] >= num_classes:
            raise C.UserError(f"--curve-classes: class index {c} >= {num_classes}")
    dres, dpath = C.run_dissection(
        loaded, val, segmenter, layer, os.path.join(out, "dissect"), quantile=quantile,
        miniou=miniou, batch_size=batch_size, progress=progress, data_name=data_name,
        seg_name=seg_name, index_link=index_link and os.path.join("..", index_link),
        seg_downsample=seg_downsample, upsample=upsample, significance=significance)
    split = ablate.split_classifier(loaded, layer)
    result = ablate.run_experiment(
        split, train, val, dres.num_units, num_classes, ks=ks, curve_classes=curve,
        unit_iou=dres.best_iou, class_names=names, layer=layer, batch_size=batch_size,
        chunk=chunk, cache_dir=os.path.join(out, "ablate", "cache"), progress=progress)
    unit_labels = [(dres.labels.names[dres.best_label[u]] if dres.labelled[u] else "-",
                    dres.labels.categories[dres.best_label[u]], float(dres.best_iou[u]))
                   for u in range(dres.num_units)]
    page = report.write_ablation(os.path.join(out, "ablate"), result, unit_labels,
                                 index_link=index_link and os.path.join("..", index_link))
    return result, dres, dpath, page


def parse_ks(text):
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise C.UserError(f"--ks must be comma-separated integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise C.UserError(f"--ks must be positive integers, got {text!r}")
    return ks


@C.writes_results
def run(args) -> int:
    from jaxdissect import report
    C.check_positive(num_images=args.num_images, train_images=args.train_images,
                     batch_size=args.batch_size, chunk=args.chunk)
    ks = parse_ks(args.ks)
    loaded = C.load_model(args.model, args.weights)
    if loaded.kind != "classifier":
        raise C.UserError(f"{args.model!r} is a generator; use jaxdissect intervene")
    layer = args.layer or loaded.default_layer
    n_val = args.num_images
    val = C.load_data(args.data, loaded, n_val, C.WORLD_VAL_SEED, split="val")
    train = C.load_data(args.data, loaded, args.train_images or n_val or val.num_examples,
                        C.WORLD_TRAIN_SEED, split="train")
    seg_name = C.default_segmenter(args, loaded)
    segmenter = C.load_segmenter(seg_name, val, loaded)
    out = C.results(args, "ablate", os.path.join(
        "results", f"ablate-{os.path.basename(loaded.name)}-{layer}"))
    curve = [c.strip() for c in args.curve_classes.split(",") if c.strip()]
    result, dres, dpath, page = experiment(
        loaded, layer, train, val, segmenter, seg_name, out, ks=ks, curve_classes=curve,
        quantile=args.quantile, miniou=args.miniou, batch_size=args.batch_size,
        chunk=args.chunk, progress=not args.no_progress, data_name=args.data,
        index_link="index.html", seg_downsample=C.seg_downsample(args, seg_name),
        upsample=args.upsample)
    findings = result.findings()
    index = report.write_index(out, [
        {"title": "Dissection", "href": "dissect/report.html",
         "text": f"{int(dres.labelled.sum())}/{dres.num_units} units labelled"},
        {"title": "Unit ablation", "href": "ablate/ablation.html", "text": "plots and tables"}],
        title=f"Ablation of {loaded.name} {layer}", findings=findings)
    s = result.summary()
    print(f"mean balanced accuracy (val): baseline {s['mean_baseline_ba']:.3f}, "
          f"top-{s['k']} removed {s['mean_removed_ba']:.3f}, "
          f"only top-{s['k']} kept {s['mean_kept_ba']:.3f}")
    for f in findings:
        print(f.plain())
    print(C.final_path(index))
    return 0
