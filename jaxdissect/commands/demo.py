"""``jaxdissect demo``: the whole paper on the synthetic world with the shipped weights.

1. dissect the world classifier's conv5_3 on world images (ground-truth segmentation);
2. ablate its units: per-class importance ranked on one world seed, measured on another;
3. dissect the world generator's layer4 over z samples (the world segmenter labels the
   generated images);
4. intervene in the generator: per-unit ablation, removal of an object's best-IoU
   units, insertion of units by context.

Both dissections use a quarter-size segmentation grid (every 4th pixel of the 64x64
ground truth / world segmentation), as the reference dissects at a quarter of the
image size. Ends by printing the path of ``OUT/index.html``, which links every part and states
the paper's findings as measured here. Every step is cached under OUT; re-running
reuses the caches and a killed run resumes.
"""

from __future__ import annotations

import os
import time

from jaxdissect.commands import _common as C

HELP = "run every experiment on the built-in synthetic world and write one linked report"


def add_arguments(p):
    p.add_argument("--out", default=os.path.join("results", "demo"), help="results folder")
    C.add_force(p)
    p.add_argument("--images", type=int, default=1000,
                   help="world images for dissection and for each ablation split")
    p.add_argument("--samples", type=int, default=1000,
                   help="z samples for the generator dissection")
    p.add_argument("--sweep-samples", type=int, default=32,
                   help="z samples for the per-unit generator sweep")
    p.add_argument("--removal-samples", type=int, default=512,
                   help="z samples for the removal curves")
    p.add_argument("--insertion-samples", type=int, default=256,
                   help="z samples for the insertion experiment")
    p.add_argument("--remove", default="tree", help="generator concept whose best-IoU "
                   "units are removed (default: tree, the paper's example)")
    p.add_argument("--insert", default="door", help="generator concept whose best-IoU "
                   "units are inserted by context (default: door, the paper's example)")
    p.add_argument("--generator", default="world-generator",
                   help="generator checkpoint (default: the shipped world generator)")
    p.add_argument("--batch-size", type=int, default=32, help="inputs per compiled step")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


@C.writes_results
def run(args) -> int:
    from jaxdissect import report
    from jaxdissect.commands import ablate as ablate_cmd
    C.check_positive(images=args.images, samples=args.samples, batch_size=args.batch_size,
                     sweep_samples=args.sweep_samples, removal_samples=args.removal_samples,
                     insertion_samples=args.insertion_samples)
    out, progress, t0 = C.results(args, "demo", args.out), not args.no_progress, time.perf_counter()

    def step(msg):
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)

    step("loading the world classifier, generator and segmenter (weights/world)")
    clf = C.load_model("world-classifier")
    try:
        gen = C.load_model(args.generator)
    except FileNotFoundError as e:
        gen = None
        print(f"warning: the generator half of the demo is skipped: {e}", flush=True)
    if gen is not None and (args.remove or args.insert):   # before any work
        from jaxdissect.commands.intervene import check_concepts
        from jaxdissect.world.vocab import LABELS  # the world segmenter's labels
        check_concepts(LABELS, [args.remove] if args.remove else [],
                       [args.insert] if args.insert else [])
    val = C.load_data("world", clf, args.images, C.WORLD_VAL_SEED)
    train = C.load_data("world", clf, args.images, C.WORLD_TRAIN_SEED)
    truth = C.load_segmenter("truth", val, clf)
    step(f"classifier: dissecting conv5_3 on {args.images} world images, then ablating "
         f"units (rank on seed {C.WORLD_TRAIN_SEED}, measure on seed {C.WORLD_VAL_SEED})")
    ares, cdres, _, _ = ablate_cmd.experiment(
        clf, "conv5_3", train, val, truth, "truth", os.path.join(out, "classifier"),
        ks=[1, 2, 3, 4, 5, 20, 64, 128, 256], curve_classes=["0"], quantile=0.01,
        miniou=0.04, batch_size=args.batch_size, chunk=64, progress=progress,
        data_name=f"world@{C.WORLD_VAL_SEED}", index_link="../index.html", seg_downsample=4,
        significance=True)
    s = ares.summary()
    step(f"classifier: mean balanced accuracy {s['mean_baseline_ba']:.3f}; top-{s['k']} "
         f"removed {s['mean_removed_ba']:.3f}; only top-{s['k']} kept {s['mean_kept_ba']:.3f}")
    step(f"classifier dissection: {int(cdres.labelled.sum())} units labelled"
         f"{_fdr_text(cdres)}")

    findings = ares.findings()
    parts = [
        {"title": "Classifier dissection (world VGG-16, conv5_3)",
         "href": "classifier/dissect/report.html",
         "text": f"{int(cdres.labelled.sum())}/{cdres.num_units} units labelled, "
                 f"{_n_concepts(cdres)} concepts{_fdr_text(cdres)}; unit cards with top "
                 f"images"},
        {"title": "Classifier unit ablation", "href": "classifier/ablate/ablation.html",
         "text": "per-class importance, sets of units removed / kept, importance vs IoU"},
        {"title": "Concept chart (classifier)", "href": "classifier/dissect/concepts.svg",
         "text": "labelled units per concept"}]
    figures = _classifier_figures(out, ares)
    if gen is not None:
        ifind, iparts = _generator_half(args, gen, out, progress, step)
        findings += ifind
        parts += iparts
        from jaxdissect.commands.intervene import index_figures
        from jaxdissect.report.pictures import load_records
        figures += index_figures("generator/intervene", load_records(
            os.path.join(out, "generator", "intervene")))
    notes = ("The synthetic world's scenes, the classifier, the generator and the segmenter "
             "ship with jaxdissect (weights/world). Sample sizes here: "
             f"{args.images} images per split, {args.samples} z samples for dissection, "
             f"{args.sweep_samples}/{args.removal_samples}/{args.insertion_samples} for the "
             "generator sweep/removal/insertion. Checks marked &#10008; did not hold on "
             "this run." + (f" Generator: {gen.name}." if gen is not None else
                            " The world generator's weights were not found, so its "
                            "experiments were skipped."))
    index = report.write_index(out, parts, title="jaxdissect demo: the synthetic world",
                               findings=findings, notes=notes, figures=figures)
    for f in findings:
        print("  " + f.plain())
    step("done")
    print(C.final_path(index))
    return 0


def _classifier_figures(out, ares) -> list[dict]:
    """The classifier's findings have no generated image; their picture is the
    ablation's per-class chart (balanced accuracy unedited, top units removed, only
    top units kept), which shows both."""
    from jaxdissect.report.pictures import png_record
    k = ares.summary()["k"]
    return [png_record(out, "classifier/ablate/ablation_classes.png", alt="ablation chart",
                       caption=f"<b>Classifier unit ablation</b> (both classifier findings): "
                               f"each class's balanced accuracy with every unit, with its "
                               f"{k} most important units removed, and with only those "
                               f"{k} kept.")]


def _fdr_text(d) -> str:
    """How many of a dissection's labels survive a 1% false-discovery rate."""
    sig = d.significance
    if sig is None:
        return ""
    return (f"; {int(sig.discoveries(0.01).sum())} of {len(sig.units)} labels survive a 1% "
            f"false-discovery rate (Benjamini-Hochberg over image-permutation p-values)")


def _n_concepts(d):
    return len({int(d.best_label[u]) for u in range(d.num_units) if d.labelled[u]})


def _generator_half(args, gen, out, progress, step):
    """Dissect and intervene in the world generator; ``(findings, index parts)``."""
    from jaxdissect.commands import intervene as intervene_cmd
    zsrc = C.load_data("z", gen, args.samples, 1)
    wseg = C.load_segmenter("world", zsrc, gen)
    step(f"generator: dissecting layer4 over {args.samples} z samples, then intervening")
    ires, gdres, _, _ = intervene_cmd.experiment(
        gen, "layer4", zsrc, wseg, "world", os.path.join(out, "generator"),
        remove=[args.remove] if args.remove else None,
        insert=[args.insert] if args.insert else None, quantile=0.01, miniou=0.04,
        batch_size=args.batch_size, chunk=16, sweep_samples=args.sweep_samples,
        removal_samples=args.removal_samples, insertion_samples=args.insertion_samples,
        max_remove=30, insert_units=20, progress=progress, data_name="z@1",
        index_link="../index.html", seg_downsample=4, significance=True)
    step(f"generator dissection: {int(gdres.labelled.sum())} units labelled{_fdr_text(gdres)}")

    parts = [
        {"title": "Generator dissection (world ProGAN, layer4)",
         "href": "generator/dissect/report.html",
         "text": f"{int(gdres.labelled.sum())}/{gdres.num_units} units labelled, "
                 f"{_n_concepts(gdres)} concepts{_fdr_text(gdres)}"},
        {"title": "Generator interventions", "href": "generator/intervene/intervention.html",
         "text": "per-unit ablation, concept removal, insertion by context"},
        {"title": "Concept chart (generator)", "href": "generator/dissect/concepts.svg",
         "text": "labelled units per concept"}]
    return ires.findings(), parts
