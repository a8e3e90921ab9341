"""The classifier ablation run: dissect a layer, then the paper's unit ablation
(``experiments.ablate``), with its pages: ``OUT/dissect/``, ``OUT/ablate/ablation.html``
and ``ablation.json``, ``OUT/index.html``."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

from jaxdissect.errors import UserError
from jaxdissect.pipeline import resolve as R
from jaxdissect.pipeline.config import AblateConfig
from jaxdissect.pipeline.dissection import Dissection, dissect_into, unit_labels
from jaxdissect.pipeline.workspace import Workspace, open_workspace


@dataclasses.dataclass(frozen=True)
class AblateOutcome:
    """``result``: the ``AblationResult``; ``dissection``: the layer's
    ``DissectResult``; ``index``: the final path of ``OUT/index.html``."""
    result: Any
    dissection: Any
    index: str | None
    out: str


def curve_class_indices(curve_classes: Sequence[str], names, num_classes: int) -> list[int]:
    """Class names or indices to chart for every k, as indices."""
    curve = []
    for c in curve_classes:
        if str(c).isdigit():
            curve.append(int(c))
        elif c in names:
            curve.append(names.index(c))
        else:
            raise UserError(f"--curve-classes: unknown class {c!r}")
        if curve[-1] >= num_classes:
            raise UserError(f"--curve-classes: class index {c} >= {num_classes}")
    return curve


def ablate_into(d: Dissection, train, ws: Workspace, *, ks, curve_classes, chunk,
                index_link: str | None = None):
    """Dissect ``d`` into ``ws/dissect``, then ablate its units (ranked on ``train``,
    measured on ``d.source``) into ``ws/ablate``, every sweep cached there under the
    complete run's identity. Returns ``(AblationResult, DissectResult)``."""
    from jaxdissect import report
    from jaxdissect.experiments import ablate
    model, val = d.model, d.source
    num_classes = model.num_classes
    names = model.class_names or val.class_names
    if names is None or len(names) != num_classes:
        names = tuple(f"class {i}" for i in range(num_classes))
    curve = curve_class_indices(curve_classes, names, num_classes)
    up_link = index_link and os.path.join("..", index_link)
    dres, _ = dissect_into(d, ws.part("dissect"), index_link=up_link)
    part = ws.part("ablate")
    cache = part.cache(model=model, layer=d.layer, data={"train": train, "val": val},
                       segmenter=None, ks=list(ks), curve_classes=curve,
                       batch_size=d.batch_size)
    result = ablate.run_experiment(
        ablate.split_classifier(model, d.layer), train, val, dres.num_units, num_classes,
        ks=ks, curve_classes=curve, unit_iou=dres.best_iou, class_names=names,
        layer=d.layer, batch_size=d.batch_size, chunk=chunk, cache=cache,
        progress=d.progress)
    report.write_ablation(part.folder, result, unit_labels(dres), index_link=up_link)
    return result, dres


def resolve_ablate(cfg: AblateConfig) -> tuple[Dissection, Any, str]:
    """``(Dissection of the val split, train source, results folder)`` of ``cfg``."""
    model = R.load_model(cfg.model, cfg.weights)
    if model.kind != "classifier":
        raise UserError(f"{cfg.model!r} is a generator; use jaxdissect intervene")
    layer = cfg.layer or model.default_layer
    val = R.load_data(cfg.data, model, cfg.num_images, R.WORLD_VAL_SEED, split="val")
    train = R.load_data(cfg.data, model, cfg.train_images or cfg.num_images or
                        val.num_examples, R.WORLD_TRAIN_SEED, split="train")
    seg_name = R.default_segmenter(model, cfg.data, cfg.segmenter)
    segmenter = R.load_segmenter(seg_name, val, model)
    out = cfg.out or os.path.join("results", f"ablate-{os.path.basename(model.name)}-{layer}")
    d = Dissection(model, cfg.model, layer, val, segmenter, seg_name, cfg.data,
                   R.default_seg_downsample(cfg.seg_downsample, seg_name), cfg.upsample,
                   cfg.quantile, cfg.miniou, cfg.batch_size, significance=cfg.significance,
                   progress=cfg.progress, model_weights=cfg.weights)
    return d, train, out


def run_ablate(cfg: AblateConfig) -> AblateOutcome:
    """The ``jaxdissect ablate`` run: dissection, ablation, pages and index."""
    from jaxdissect import report
    d, train, out = resolve_ablate(cfg)
    with open_workspace(out, "ablate", cfg.force) as ws:
        result, dres = ablate_into(d, train, ws, ks=cfg.ks, curve_classes=cfg.curve_classes,
                                   chunk=cfg.chunk, index_link="index.html")
        index = report.write_index(ws.folder, [
            {"title": "Dissection", "href": "dissect/report.html",
             "text": f"{int(dres.labelled.sum())}/{dres.num_units} units labelled"},
            {"title": "Unit ablation", "href": "ablate/ablation.html",
             "text": "plots and tables"}],
            title=f"Ablation of {d.model.name} {d.layer}", findings=result.findings())
        index = ws.final_path(index)
    return AblateOutcome(result, dres, index, os.path.abspath(out))
