"""``jaxdissect intervene``: what turning generator units off and on does to the scene.

Dissects the generator layer over z samples (cached; segmenting the generated
images), then runs the paper's generator experiments (``jaxdissect.experiments.intervene``):
per-unit ablation effect on every class's pixel share; removal of a concept's
n = 0..30 best-IoU units with 99% confidence intervals; insertion of a concept's
top-20 units at their 99.5% quantile values at each feature-map location, broken
down by the context label there. Writes ``OUT/dissect/``, ``OUT/intervene/
intervention.html`` and ``intervention.json``, and ``OUT/index.html``.
"""

from __future__ import annotations

import os

import numpy as np

from jaxdissect.commands import _common as C

HELP = "generator interventions: unit ablation, concept removal and insertion by context"


def add_arguments(p):
    C.add_common(p, kind_default_model="world-generator")
    p.add_argument("--num-samples", type=int, default=1000,
                   help="z samples for the dissection, and at most for each experiment "
                        "(paper: 10000)")
    p.add_argument("--sweep-samples", type=int, default=32,
                   help="z samples for the per-unit ablation sweep (its cost is units x "
                        "samples generator passes)")
    p.add_argument("--removal-samples", type=int, default=128,
                   help="z samples for the removal curves")
    p.add_argument("--insertion-samples", type=int, default=64,
                   help="z samples for the insertion experiment (cost: samples x locations)")
    p.add_argument("--seed", type=int, default=1, help="z seed (paper: 1)")
    p.add_argument("--remove", action="append", default=None,
                   help="concept whose best-IoU units are removed (repeatable; default: "
                        "tree as the paper if labelled, else the object with the most "
                        "labelled units)")
    p.add_argument("--insert", action="append", default=None,
                   help="concept whose top units are inserted (repeatable; default: door "
                        "if labelled, else the removal concept)")
    p.add_argument("--max-remove", type=int, default=30,
                   help="removal curves go from 0 to this many units")
    p.add_argument("--insert-units", type=int, default=20, help="units inserted per concept")
    p.add_argument("--chunk", type=int, default=16, help="edits per compiled step")


def check_concepts(labels, *groups) -> None:
    """A clear error, before any work, for a concept name the segmenter does not know."""
    names = list(labels.names[1:])
    for name in (n for g in groups for n in (g or ())):
        if name not in names:
            raise C.UserError(f"unknown concept {name!r}; the segmenter's labels are {names}")


def default_concepts(dres, remove, insert):
    labels = dres.labels
    counts = np.bincount(dres.best_label[dres.labelled], minlength=len(labels))
    objects = [i for i in range(1, len(labels)) if labels.categories[i] == "object"] or \
        list(range(1, len(labels)))
    labelled = lambda name: name in labels.names and counts[labels.index(name)] > 0  # noqa: E731
    if not remove:      # the paper's trees, else the object with the most units
        best = max(objects, key=lambda i: (counts[i], dres.iou[:, i].max()))
        remove = ["tree"] if labelled("tree") else [labels.names[best]]
    if not insert:      # the paper's doors, else the removal concept
        insert = ["door"] if labelled("door") else [remove[0]]
    check_concepts(labels, remove, insert)
    return [labels.index(n) for n in remove], [labels.index(n) for n in insert]


def experiment(loaded, layer, source, segmenter, seg_name, out, *, remove, insert,
               quantile, miniou, batch_size, chunk, sweep_samples, removal_samples,
               insertion_samples=None, max_remove, insert_units, progress, data_name,
               index_link=None, seg_downsample=1, upsample=None, significance=False):
    from jaxdissect import report
    from jaxdissect.experiments import intervene
    dres, dpath = C.run_dissection(
        loaded, source, segmenter, layer, os.path.join(out, "dissect"), quantile=quantile,
        miniou=miniou, batch_size=batch_size, progress=progress, data_name=data_name,
        seg_name=seg_name, index_link=index_link and os.path.join("..", index_link),
        seg_downsample=seg_downsample, upsample=upsample, significance=significance)
    rm, ins = default_concepts(dres, remove, insert)
    high = dres.levels.get(0.005)
    if high is None:
        raise C.UserError("insertion needs the 99.5% quantile level; use --quantile >= 0.005")
    split = intervene.split_generator(loaded, layer)
    result = intervene.run_experiment(
        split, segmenter, source, dres.iou, dres.labels, high, remove_concepts=rm,
        insert_concepts=ins, max_remove=max_remove, insert_units=insert_units,
        sweep_samples=sweep_samples, removal_samples=removal_samples,
        insertion_samples=insertion_samples, batch_size=batch_size, chunk=chunk,
        layer=layer, cache_dir=os.path.join(out, "intervene", "cache"), progress=progress)
    pictures = write_pictures(os.path.join(out, "intervene"), split, segmenter, source,
                              result, high)
    page = report.write_intervention(os.path.join(out, "intervene"), result,
                                     index_link=index_link and os.path.join("..", index_link),
                                     pictures=pictures)
    return result, dres, dpath, page


def write_pictures(outdir, split, segmenter, source, result, high) -> list[dict]:
    """The removal strips and insertion grids of ``result`` as PNGs under ``outdir``;
    their records (``report.pictures``)."""
    from jaxdissect.experiments.intervene_pictures import intervention_pictures
    from jaxdissect.report import pictures as P
    draw = {"removal": P.removal_strip, "insertion": P.insertion_grid}
    records = [draw[p.kind](outdir, p) for p in intervention_pictures(
        split, segmenter, source, result, high)]
    P.remove_others(outdir, records)
    return records


def index_figures(folder: str, records) -> list[dict]:
    """Picture records of a page in ``folder`` (relative to the index), captioned, for
    ``report.write_index``'s ``figures``."""
    from jaxdissect.report import pictures as P
    return [dict(r, src=f"{folder}/{r['src']}", caption=P.caption(r)) for r in records]


@C.writes_results
def run(args) -> int:
    from jaxdissect import report
    C.check_positive(num_samples=args.num_samples, sweep_samples=args.sweep_samples,
                     removal_samples=args.removal_samples,
                     insertion_samples=args.insertion_samples, batch_size=args.batch_size,
                     chunk=args.chunk, insert_units=args.insert_units)
    if args.max_remove < 0:
        raise C.UserError("--max-remove must be >= 0")
    if not 0.005 <= args.quantile < 1:
        raise C.UserError(f"--quantile must be in [0.005, 1): insertion sets units to their "
                          f"99.5% quantile level, got {args.quantile}")
    if not 0 < args.miniou < 1:
        raise C.UserError(f"--miniou must be in (0, 1), got {args.miniou}")
    loaded = C.load_model(args.model, args.weights)
    if loaded.kind != "generator":
        raise C.UserError(f"{args.model!r} is a classifier; use jaxdissect ablate")
    layer = args.layer or loaded.default_layer
    args.data = "z"
    source = C.load_data("z", loaded, args.num_samples, args.seed)
    seg_name = C.default_segmenter(args, loaded)
    segmenter = C.load_segmenter(seg_name, source, loaded)
    check_concepts(segmenter.labels, args.remove, args.insert)   # before the dissection
    C.check_layer(loaded, layer)
    out = C.results(args, "intervene", os.path.join(
        "results", f"intervene-{os.path.basename(loaded.name)}-{layer}"))
    result, dres, dpath, page = experiment(
        loaded, layer, source, segmenter, seg_name, out, remove=args.remove,
        insert=args.insert, quantile=args.quantile, miniou=args.miniou,
        batch_size=args.batch_size, chunk=args.chunk, sweep_samples=args.sweep_samples,
        removal_samples=args.removal_samples, insertion_samples=args.insertion_samples,
        max_remove=args.max_remove,
        insert_units=args.insert_units, progress=not args.no_progress,
        data_name=f"z@{args.seed}", index_link="index.html",
        seg_downsample=C.seg_downsample(args, seg_name),
        upsample=args.upsample)
    findings = result.findings()
    from jaxdissect.report.pictures import load_records
    figures = index_figures("intervene", load_records(os.path.join(out, "intervene")))
    index = report.write_index(out, [
        {"title": "Dissection", "href": "dissect/report.html",
         "text": f"{int(dres.labelled.sum())}/{dres.num_units} units labelled"},
        {"title": "Interventions", "href": "intervene/intervention.html",
         "text": "removal and insertion"}],
        title=f"Interventions in {loaded.name} {layer}", findings=findings, figures=figures)
    for f in findings:
        print(f.plain())
    print(C.final_path(index))
    return 0
