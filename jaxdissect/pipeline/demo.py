"""The whole paper on the synthetic world with the shipped weights, as one run.

1. dissect the world classifier's conv5_3 on world images (ground-truth segmentation);
2. ablate its units: per-class importance ranked on one world seed, measured on another;
3. dissect the world generator's layer4 over z samples (the world segmenter labels the
   generated images);
4. intervene in the generator: per-unit ablation, removal of an object's best-IoU
   units, insertion of units by context;
5. describe the classifier's conv5_3 units with open-vocabulary labels (the shipped
   world image-text model and concept list, the ``describe`` command's defaults) on
   the images of step 1, beside their dissection labels.

Both dissections use a quarter-size segmentation grid, as the reference dissects at a
quarter of the image size. Writes ``OUT/classifier/`` (with ``describe.html``),
``OUT/generator/`` and ``OUT/index.html``. Every sweep is cached under OUT by the
complete run's identity: a re-run reuses every cache and a killed run resumes.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from jaxdissect.pipeline import resolve as R
from jaxdissect.pipeline.ablation import ablate_into
from jaxdissect.pipeline.config import DEFAULT_KS, DemoConfig
from jaxdissect.pipeline.dissection import Dissection
from jaxdissect.pipeline.intervention import check_concepts, index_figures, intervene_into
from jaxdissect.pipeline.workspace import Workspace, open_workspace

CLASSIFIER, GENERATOR = "world-classifier", "world-generator"


@dataclasses.dataclass(frozen=True)
class DemoOutcome:
    """The classifier's ablation and dissection, the generator's intervention and
    dissection (None when its weights are missing), and the index's final path."""
    ablation: Any
    classifier: Any
    intervention: Any
    generator: Any
    findings: list
    index: str | None
    description: dict | None = None


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = lambda msg: None) -> DemoOutcome:
    """The ``jaxdissect demo`` run; ``log`` is told each step."""
    from jaxdissect import report
    t0 = time.perf_counter()

    def step(msg):
        log(f"[{time.perf_counter() - t0:6.0f}s] {msg}")

    step("loading the world classifier, generator and segmenter (weights/world)")
    clf = R.load_model(CLASSIFIER)
    try:
        gen = R.load_model(cfg.generator)
    except FileNotFoundError as e:
        gen = None
        log(f"warning: the generator half of the demo is skipped: {e}")
    if gen is not None and (cfg.remove or cfg.insert):   # before any work
        from jaxdissect.world.vocab import LABELS  # the world segmenter's labels
        check_concepts(LABELS, [cfg.remove] if cfg.remove else [],
                       [cfg.insert] if cfg.insert else [])
    val = R.load_data("world", clf, cfg.images, R.WORLD_VAL_SEED)
    train = R.load_data("world", clf, cfg.images, R.WORLD_TRAIN_SEED)
    d = Dissection(clf, CLASSIFIER, "conv5_3", val, R.load_segmenter("truth", val, clf),
                   "truth", f"world@{R.WORLD_VAL_SEED}", 4, batch_size=cfg.batch_size,
                   significance=True, progress=cfg.progress)
    with open_workspace(cfg.out, "demo", cfg.force) as ws:
        step(f"classifier: dissecting conv5_3 on {cfg.images} world images, then ablating "
             f"units (rank on seed {R.WORLD_TRAIN_SEED}, measure on seed {R.WORLD_VAL_SEED})")
        ares, cdres = ablate_into(d, train, ws.part("classifier"), ks=DEFAULT_KS,
                                  curve_classes=["0"], chunk=64, index_link="../index.html")
        s = ares.summary()
        step(f"classifier: mean balanced accuracy {s['mean_baseline_ba']:.3f}; top-{s['k']} "
             f"removed {s['mean_removed_ba']:.3f}; only top-{s['k']} kept "
             f"{s['mean_kept_ba']:.3f}")
        step(f"classifier dissection: {int(cdres.labelled.sum())} units labelled"
             f"{_fdr_text(cdres)}")
        findings = ares.findings()
        parts = [
            {"title": "Classifier dissection (world VGG-16, conv5_3)",
             "href": "classifier/dissect/report.html",
             "text": f"{int(cdres.labelled.sum())}/{cdres.num_units} units labelled, "
                     f"{_n_concepts(cdres)} concepts{_fdr_text(cdres)}; unit cards with "
                     f"top images"},
            {"title": "Classifier unit ablation", "href": "classifier/ablate/ablation.html",
             "text": "per-class importance, sets of units removed / kept, importance vs IoU"},
            {"title": "Concept chart (classifier)", "href": "classifier/dissect/concepts.svg",
             "text": "labelled units per concept"}]
        desc, sections = None, []
        if cfg.describe:
            desc = _describe_part(cfg, clf, val, cdres, ws, step)
            parts.append(_describe_link(desc))
            sections.append(_describe_section(desc))
        figures = _classifier_figures(ws, ares)
        ires = gdres = None
        if gen is not None:
            ires, gdres = _generator_half(cfg, gen, ws, step)
            findings += ires.findings()
            parts += _generator_parts(gdres)
            from jaxdissect.report.pictures import load_records
            figures += index_figures("generator/intervene", load_records(
                ws.path("generator", "intervene")))
        index = report.write_index(ws.folder, parts,
                                   title="jaxdissect demo: the synthetic world",
                                   findings=findings, notes=_notes(cfg, gen),
                                   figures=figures, sections=sections)
        index = ws.final_path(index)
    return DemoOutcome(ares, cdres, ires, gdres, findings, index, desc)


#: the scoring the summary also states: the one docs/describe.md advises for a short
#: concept list where many units share a concept (the same sweep, rescored)
RESCORE = {"WPMI": ("wpmi", {})}


def _describe_part(cfg: DemoConfig, clf, val, cdres, ws: Workspace, step) -> dict:
    """Open-vocabulary labels of conv5_3 on the dissection's own images, written beside
    its dissection (``OUT/classifier/describe.html``), summarised in the log."""
    from jaxdissect.pipeline.description import describe_into
    step(f"classifier: describing conv5_3 with open-vocabulary labels on the same "
         f"{cfg.images} images (the world image-text model, SoftWPMI)")
    desc = describe_into(clf, CLASSIFIER, "conv5_3", val, cdres, ws.part("classifier"),
                         data_name=f"world@{R.WORLD_VAL_SEED}", rescore=RESCORE,
                         batch_size=cfg.batch_size, progress=cfg.progress,
                         index_link="../index.html")
    step(describe_summary(desc)[0])
    return desc


def _rate(n: int, of: int) -> str:
    return f"{n}/{of} ({100 * n / of:.1f}%)" if of else f"{n}/0"


def _statement(desc: dict) -> list[str]:
    """Agreement on the units dissection labels with its chance level, the same for
    the scoring the docs advise for short lists, and why agreement is a minority."""
    n, ch = desc["labelled"], desc["chance"]
    lines = [f"Open-vocabulary labels (SoftWPMI, the paper's defaults) equal the "
             f"dissection label on {_rate(desc['agree'], n)} of the units dissection "
             f"labels; chance {100 * ch['chance_rate']:.1f}% (labels shuffled over units, "
             f"p {ch['p_value']:.3g}); a distractor word labels {desc['distractor_wins']}/"
             f"{desc['units']} units."]
    for name, r in desc["rescored"].items():
        lines.append(f"Rescored with {name}: {_rate(r['agree'], n)}, chance "
                     f"{100 * r['chance']['chance_rate']:.1f}% (p {r['chance']['p_value']:.3g})"
                     f"; a distractor word labels {r['distractor_wins']}/{desc['units']} "
                     f"units.")
    return lines + [_why(desc)]


def _examples(desc: dict, examples: int = 5) -> list[dict]:
    """A few labelled units: the highest-IoU agreeing ones, up to half, then the
    highest-IoU others."""
    by_iou = sorted((p for p in desc["pairs"] if p["dissect"] is not None),
                    key=lambda p: (-p["iou"], p["unit"]))
    shown = [p for p in by_iou if p["agree"]][:examples // 2]
    return shown + [p for p in by_iou if not p["agree"]][:examples - len(shown)]


def describe_summary(desc: dict, examples: int = 5) -> list[str]:
    """The describe section's printed lines: :func:`_statement`, then a few units
    both ways (:func:`_examples`)."""
    return _statement(desc) + [
        f"  unit {p['unit']:3d}: masks {p['dissect']} (IoU {p['iou']:.2f}), open "
        f"vocabulary {p['open']}" + (" (agree)" if p["agree"] else "")
        for p in _examples(desc, examples)]


def _describe_link(desc: dict) -> dict:
    n, ch = desc["labelled"], desc["chance"]
    return {"title": "Open-vocabulary labels (classifier, conv5_3)",
            "href": "classifier/describe.html",
            "text": f"each unit's card with its open-vocabulary and dissection labels; the "
                    f"same word on {_rate(desc['agree'], n)} of the units dissection labels "
                    f"(chance {100 * ch['chance_rate']:.1f}%)"}


def _describe_section(desc: dict) -> dict:
    """The index's section: the statement and a table of example units both ways."""
    return {"title": "Open-vocabulary labels beside the dissection labels (classifier, "
                     "conv5_3)",
            "lines": _statement(desc),
            "header": ("unit", "dissection label (ground-truth masks)", "IoU",
                       "open-vocabulary label (world image-text model)", "same word"),
            "rows": [(p["unit"], p["dissect"], f"{p['iou']:.3f}", p["open"],
                      "yes" if p["agree"] else "no") for p in _examples(desc)],
            "href": "classifier/describe.html",
            "link": "every unit's card with both labels"}


def _why(desc: dict) -> str:
    """Why the two labellings differ, said only where agreement is a minority (and
    why distractor words win, where they do)."""
    if 2 * desc["agree"] >= desc["labelled"]:
        return "Here the two labels agree on at least half of the labelled units."
    why = ("Agreement is a minority: the image-text method ranks whole images by a "
           "unit's mean activation, so a unit's label is often what its images show "
           "beside or over its concept (a colour, the scene), where dissection asks "
           "which pixels it fires on")
    if desc["distractor_wins"]:
        why += ("; and distractor words (never in the world) win under the paper's "
                "lam = 1, which penalises a concept probable for any unit, so where many "
                "units share a concept a word improbable for all of them scores higher")
    return why + " (docs/describe.md)."


def _generator_half(cfg: DemoConfig, gen, ws: Workspace, step):
    """Dissect and intervene in the world generator: ``(intervention, dissection)``."""
    zsrc = R.load_data("z", gen, cfg.samples, R.Z_SEED)
    d = Dissection(gen, cfg.generator, "layer4", zsrc, R.load_segmenter("world", zsrc, gen),
                   "world", f"z@{R.Z_SEED}", 4, batch_size=cfg.batch_size,
                   significance=True, progress=cfg.progress)
    step(f"generator: dissecting layer4 over {cfg.samples} z samples, then intervening")
    ires, gdres = intervene_into(
        d, ws.part("generator"), remove=[cfg.remove] if cfg.remove else None,
        insert=[cfg.insert] if cfg.insert else None, chunk=16,
        sweep_samples=cfg.sweep_samples, removal_samples=cfg.removal_samples,
        insertion_samples=cfg.insertion_samples, max_remove=30, insert_units=20,
        index_link="../index.html")
    step(f"generator dissection: {int(gdres.labelled.sum())} units labelled{_fdr_text(gdres)}")
    return ires, gdres


def _generator_parts(gdres) -> list[dict]:
    return [
        {"title": "Generator dissection (world ProGAN, layer4)",
         "href": "generator/dissect/report.html",
         "text": f"{int(gdres.labelled.sum())}/{gdres.num_units} units labelled, "
                 f"{_n_concepts(gdres)} concepts{_fdr_text(gdres)}"},
        {"title": "Generator interventions", "href": "generator/intervene/intervention.html",
         "text": "per-unit ablation, concept removal, insertion by context"},
        {"title": "Concept chart (generator)", "href": "generator/dissect/concepts.svg",
         "text": "labelled units per concept"}]


def _notes(cfg: DemoConfig, gen) -> str:
    return ("The synthetic world's scenes, the classifier, the generator and the segmenter "
            "ship with jaxdissect (weights/world). Sample sizes here: "
            f"{cfg.images} images per split, {cfg.samples} z samples for dissection, "
            f"{cfg.sweep_samples}/{cfg.removal_samples}/{cfg.insertion_samples} for the "
            "generator sweep/removal/insertion. Checks marked &#10008; did not hold on "
            "this run." + (f" Generator: {gen.name}." if gen is not None else
                           " The world generator's weights were not found, so its "
                           "experiments were skipped."))


def _classifier_figures(ws: Workspace, ares) -> list[dict]:
    """The classifier's findings have no generated image; their picture is the
    ablation's per-class chart (balanced accuracy unedited, top units removed, only
    top units kept), which shows both."""
    from jaxdissect.report.pictures import png_record
    k = ares.summary()["k"]
    return [png_record(ws.folder, "classifier/ablate/ablation_classes.png",
                       alt="ablation chart",
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
