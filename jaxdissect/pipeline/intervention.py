"""The generator intervention run: dissect a layer over z samples, then the paper's
unit ablation, concept removal and insertion by context (``experiments.intervene``),
with pictures and pages: ``OUT/dissect/``, ``OUT/intervene/intervention.html`` and
``intervention.json``, ``OUT/index.html``."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from jaxdissect.errors import UserError
from jaxdissect.pipeline import resolve as R
from jaxdissect.pipeline.config import InterveneConfig
from jaxdissect.pipeline.dissection import Dissection, dissect_into
from jaxdissect.pipeline.workspace import Workspace, open_workspace


@dataclasses.dataclass(frozen=True)
class InterveneOutcome:
    """``result``: the ``InterventionResult``; ``dissection``: the layer's
    ``DissectResult``; ``index``: the final path of ``OUT/index.html``."""
    result: Any
    dissection: Any
    index: str | None
    out: str


def check_concepts(labels, *groups) -> None:
    """A clear error, before any work, for a concept name the segmenter does not know."""
    names = list(labels.names[1:])
    for name in (n for g in groups for n in (g or ())):
        if name not in names:
            raise UserError(f"unknown concept {name!r}; the segmenter's labels are {names}")


def default_concepts(dres, remove, insert):
    """Label indices of the concepts removed and inserted: ``remove`` / ``insert``, or
    the paper's trees (else the object with the most labelled units) and doors (else
    the removal concept)."""
    labels = dres.labels
    counts = np.bincount(dres.best_label[dres.labelled], minlength=len(labels))
    objects = [i for i in range(1, len(labels)) if labels.categories[i] == "object"] or \
        list(range(1, len(labels)))
    labelled = lambda name: name in labels.names and counts[labels.index(name)] > 0  # noqa: E731
    if not remove:
        best = max(objects, key=lambda i: (counts[i], dres.iou[:, i].max()))
        remove = ["tree"] if labelled("tree") else [labels.names[best]]
    if not insert:
        insert = ["door"] if labelled("door") else [remove[0]]
    check_concepts(labels, remove, insert)
    return [labels.index(n) for n in remove], [labels.index(n) for n in insert]


def intervene_into(d: Dissection, ws: Workspace, *, remove, insert, chunk, sweep_samples,
                   removal_samples, insertion_samples, max_remove, insert_units,
                   index_link: str | None = None):
    """Dissect ``d`` into ``ws/dissect``, then intervene into ``ws/intervene`` (every
    sweep cached there under the complete run's identity). Returns
    ``(InterventionResult, DissectResult)``."""
    from jaxdissect import report
    from jaxdissect.experiments import intervene
    up_link = index_link and os.path.join("..", index_link)
    dres, _ = dissect_into(d, ws.part("dissect"), index_link=up_link)
    rm, ins = default_concepts(dres, remove, insert)
    high = dres.levels.get(0.005)
    if high is None:
        raise UserError("insertion needs the 99.5% quantile level; use --quantile >= 0.005")
    part = ws.part("intervene")
    settings = dict(remove=rm, insert=ins, sweep_samples=sweep_samples,
                    removal_samples=removal_samples, insertion_samples=insertion_samples,
                    max_remove=max_remove, insert_units=insert_units,
                    dissection=d.settings(), batch_size=d.batch_size)
    cache = part.cache(model=d.model, layer=d.layer, data=d.source, segmenter=d.segmenter,
                       **settings)
    split = intervene.split_generator(d.model, d.layer)
    result = intervene.run_experiment(
        split, d.segmenter, d.source, dres.iou, dres.labels, high, remove_concepts=rm,
        insert_concepts=ins, max_remove=max_remove, insert_units=insert_units,
        sweep_samples=sweep_samples, removal_samples=removal_samples,
        insertion_samples=insertion_samples, batch_size=d.batch_size, chunk=chunk,
        layer=d.layer, cache=cache, progress=d.progress,
        significant_labels=significant_labels(dres, d.significance))
    pictures = write_pictures(part.folder, split, d.segmenter, d.source, result, high, cache)
    report.write_intervention(part.folder, result, index_link=up_link, pictures=pictures)
    return result, dres


def significant_labels(dres, tested: bool):
    """``[units]``: each unit's label where it passed its significance test, else 0;
    None when labels were not tested (with ``tested``, a dissection without labelled
    units has none)."""
    import numpy as np

    from jaxdissect.experiments.intervene import LABEL_FDR
    if dres.significance is not None:
        return dres.significance.significant_labels(dres.num_units, LABEL_FDR)
    return np.zeros(dres.num_units, np.int64) if tested else None


def write_pictures(outdir, split, segmenter, source, result, high, cache=None) -> list[dict]:
    """The removal strips and insertion grids of ``result`` as PNGs under ``outdir``;
    their records (``report.pictures``). ``cache``: the intervention's ``RunCache``,
    where the edited images are kept for a re-run."""
    from jaxdissect.experiments.intervene_pictures import intervention_pictures
    from jaxdissect.report import pictures as P
    draw = {"removal": P.removal_strip, "insertion": P.insertion_grid}
    records = [draw[p.kind](outdir, p) for p in intervention_pictures(
        split, segmenter, source, result, high, cache=cache)]
    P.remove_others(outdir, records)
    return records


def index_figures(folder: str, records) -> list[dict]:
    """Picture records of a page in ``folder`` (relative to the index), captioned, for
    ``report.write_index``'s ``figures``."""
    from jaxdissect.report import pictures as P
    return [dict(r, src=f"{folder}/{r['src']}", caption=P.caption(r)) for r in records]


def generator_dissection(cfg, command: str, concepts=(), full_grid: bool = False
                         ) -> Dissection:
    """The dissection over z samples a generator run starts from (``cfg``: an
    ``InterveneConfig`` or a ``PaintConfig``; ``command``: the run's name in errors):
    the model (a classifier is refused), its layer, ``cfg.num_samples`` z samples, the
    segmenter; ``concepts`` and the layer are checked before any work. ``full_grid``:
    segment at full size unless ``cfg.seg_downsample`` says otherwise (else the
    segmenter's default grid)."""
    model = R.load_model(cfg.model, cfg.weights)
    if model.kind != "generator":
        raise UserError(f"{cfg.model!r} is a classifier; jaxdissect {command} needs a "
                        f"generator (a classifier's units: jaxdissect ablate)")
    layer = cfg.layer or model.default_layer
    source = R.load_data("z", model, cfg.num_samples, cfg.seed)
    seg_name = R.default_segmenter(model, "z", cfg.segmenter)
    segmenter = R.load_segmenter(seg_name, source, model)
    check_concepts(segmenter.labels, concepts)
    R.check_layer(model, layer)
    grid = (1 if full_grid and cfg.seg_downsample is None else
            R.default_seg_downsample(cfg.seg_downsample, seg_name))
    return Dissection(model, cfg.model, layer, source, segmenter, seg_name, f"z@{cfg.seed}",
                      grid, cfg.upsample, cfg.quantile, cfg.miniou, cfg.batch_size,
                      significance=getattr(cfg, "significance", False),
                      progress=cfg.progress, model_weights=cfg.weights)


def resolve_intervene(cfg: InterveneConfig) -> tuple[Dissection, str]:
    """``(Dissection over z samples, results folder)`` of ``cfg``; unknown concepts and
    layers fail here, before any work."""
    d = generator_dissection(cfg, "intervene", (*cfg.remove, *cfg.insert))
    out = cfg.out or os.path.join("results",
                                  f"intervene-{os.path.basename(d.model.name)}-{d.layer}")
    return d, out


def run_intervene(cfg: InterveneConfig) -> InterveneOutcome:
    """The ``jaxdissect intervene`` run: dissection, interventions, pictures, index."""
    from jaxdissect import report
    from jaxdissect.report.pictures import load_records
    d, out = resolve_intervene(cfg)
    with open_workspace(out, "intervene", cfg.force) as ws:
        result, dres = intervene_into(
            d, ws, remove=list(cfg.remove), insert=list(cfg.insert), chunk=cfg.chunk,
            sweep_samples=cfg.sweep_samples, removal_samples=cfg.removal_samples,
            insertion_samples=cfg.insertion_samples, max_remove=cfg.max_remove,
            insert_units=cfg.insert_units, index_link="index.html")
        figures = index_figures("intervene", load_records(ws.path("intervene")))
        index = report.write_index(ws.folder, [
            {"title": "Dissection", "href": "dissect/report.html",
             "text": f"{int(dres.labelled.sum())}/{dres.num_units} units labelled"},
            {"title": "Interventions", "href": "intervene/intervention.html",
             "text": "removal and insertion"}],
            title=f"Interventions in {d.model.name} {d.layer}", findings=result.findings(),
            figures=figures)
        index = ws.final_path(index)
    return InterveneOutcome(result, dres, index, os.path.abspath(out))
