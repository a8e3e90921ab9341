"""Open-vocabulary description as ``jaxdissect describe`` runs it: every unit of a layer
labelled with a word of a concept list from probe images and an image-text model
(``experiments.describe``), beside its mask-based dissection where the data has masks."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from jaxdissect.pipeline import resolve as R
from jaxdissect.pipeline.config import DescribeConfig
from jaxdissect.pipeline.workspace import open_workspace


@dataclasses.dataclass(frozen=True)
class DescribeOutcome:
    """``result`` (a ``DescribeResult``); ``comparison``: agreement with the mask-based
    labels (None without a dissection); ``report``: the final path of ``describe.html``
    (None in the processes that do not write); ``model``, ``layer``: what was described."""
    result: Any
    comparison: dict | None
    report: str | None
    model: Any
    layer: str
    concepts: tuple[str, ...]


def _thumbnails(source, res, k: int = 5) -> dict:
    import numpy as np
    strips = {}
    for u in range(res.num_units):
        idx = [int(i) for i in res.top_images[u, :k]]
        imgs = np.stack([source.batch(i, i + 1)["image"][0] for i in idx])
        strips[u] = (imgs, np.ones(imgs.shape[:3], bool))
    return strips


def run_describe(cfg: DescribeConfig) -> DescribeOutcome:
    """Describe as ``jaxdissect describe`` does: ``OUT/describe.html``, ``describe.json``,
    ``describe.npz``, ``cache/`` and, on data with masks, ``OUT/dissect/``."""
    from jaxdissect.experiments.describe import compare, describe_spec
    from jaxdissect.imagetext import load_imagetext, read_concepts
    from jaxdissect.pipeline.dissection import Dissection, dissect_into
    from jaxdissect.runtime import hosts
    from jaxdissect.world.imagetext import default_concepts, distractors

    concepts = tuple(read_concepts(cfg.concepts) if cfg.concepts else default_concepts())
    model = R.load_model(cfg.model, cfg.weights)
    layer = cfg.layer or model.default_layer
    R.check_layer(model, layer)
    seed = R.WORLD_VAL_SEED if cfg.seed is None else cfg.seed
    source = R.load_data(cfg.data, model, cfg.num_images, seed)
    imagetext = load_imagetext(cfg.imagetext)
    data_name = f"{cfg.data}@{seed}"
    out = cfg.out or os.path.join("results", "-".join(
        (os.path.basename(model.name.rstrip("/")), layer, "describe")))
    has_truth = getattr(source, "seg_labels", None) is not None
    seg_name = cfg.segmenter or ("truth" if has_truth else None)
    options = {k: v for k, v in (("top_k", cfg.top_k), ("lam", cfg.lam)) if v is not None}
    with open_workspace(out, "describe", cfg.force) as ws:
        dissected = None
        if not cfg.no_dissect and seg_name is not None:
            d = Dissection(model, cfg.model, layer, source,
                           R.load_segmenter(seg_name, source, model), seg_name, data_name,
                           R.default_seg_downsample(cfg.seg_downsample, seg_name),
                           cfg.upsample, cfg.quantile, cfg.miniou, cfg.batch_size,
                           progress=cfg.progress, model_weights=cfg.weights)
            dissected, _ = dissect_into(d, ws.part("dissect"))
        cache = ws.cache(model=model, layer=layer, data=source, segmenter=None,
                         imagetext=cfg.imagetext, concepts=concepts, method=cfg.method,
                         pool=cfg.pool, batch_size=cfg.batch_size, **options)
        res = describe_spec(model, layer, source, imagetext, list(concepts),
                            method=cfg.method, pool=cfg.pool, batch_size=cfg.batch_size,
                            cache=cache, progress=cfg.progress, **options)
        if not hosts.is_writer():
            return DescribeOutcome(res, None, None, model, layer, concepts)
        pairs = comparison = None
        if dissected is not None:
            comparison = compare(res, dissected, distractors(concepts))
            pairs = _with_iou(comparison.pop("pairs"), dissected)
        path = _write_report(ws, res, source, model=model.name,
                             record=R.model_record(cfg.model, cfg.weights), layer=layer,
                             data_name=data_name, imagetext=cfg.imagetext, pairs=pairs,
                             comparison=comparison)
        final = ws.final_path(path)
    return DescribeOutcome(res, comparison, final, model, layer, concepts)


def describe_into(model, model_spec: str, layer: str, source, dissected, ws, *,
                  data_name: str, imagetext: str = "world", concepts=None, rescore=None,
                  batch_size: int = 32, progress: bool = True,
                  index_link: str | None = None) -> dict:
    """The open-vocabulary labels of ``layer``'s units (``model`` loaded from
    ``model_spec``) beside their mask-based labels (``dissected``, a ``DissectResult``
    of the same units on the same ``source``), written into ``ws``: ``describe.html``
    (its link to the masks' report is ``dissect/report.html``, so ``ws`` is the folder
    holding that dissection), ``describe.json``, ``describe.npz``, ``top/`` and the
    sweep's ``cache/``.

    The describe command's defaults (the paper's SoftWPMI; ``concepts``: the shipped
    world list). ``rescore``: ``{name: (method, options)}`` further scorings of the
    same sweep, compared the same way; ``index_link``: the page ``describe.html``
    links back to. Returns ``experiments.describe.compare``'s dict (its ``pairs`` with
    the unit's best ``iou``) with ``chance`` (``experiments.describe_world.chance``),
    ``result`` (the ``DescribeResult``), ``rescored`` (``{name: {"agree", "chance",
    "distractor_wins"}}``) and ``report`` (the path of ``describe.html``, None in the
    processes that do not write); ``describe.json``'s ``comparison`` holds all but
    ``pairs``, ``result`` and ``report``."""
    from jaxdissect.experiments.describe import compare, label_units, probe_tables
    from jaxdissect.experiments.describe_world import chance
    from jaxdissect.experiments.dissect import spec_forward
    from jaxdissect.imagetext import load_imagetext
    from jaxdissect.runtime import hosts
    from jaxdissect.world.imagetext import default_concepts, distractors

    concepts = tuple(concepts or default_concepts())
    it = load_imagetext(imagetext)
    cache = ws.cache(model=model, layer=layer, data=source, segmenter=None,
                     imagetext=imagetext, concepts=concepts, method="softwpmi", pool="avg",
                     batch_size=batch_size)
    tables = probe_tables(spec_forward(model, layer), source, it, params=model.params,
                          batch_size=batch_size, cache=cache, progress=progress)
    res = label_units(tables, it, concepts)
    far = distractors(concepts)
    out = compare(res, dissected, far)
    _with_iou(out["pairs"], dissected)
    out.update(result=res, chance=chance(res, dissected), report=None, rescored={})
    for name, (method, options) in (rescore or {}).items():
        other = label_units(tables, it, concepts, method, **options)
        cmp = compare(other, dissected, far)
        out["rescored"][name] = {"agree": cmp["agree"], "chance": chance(other, dissected),
                                 "distractor_wins": cmp["distractor_wins"]}
    if not hosts.is_writer():
        return out
    comparison = {k: v for k, v in out.items()
                  if k not in ("pairs", "result", "report")}
    out["report"] = _write_report(ws, res, source, model=model.name,
                                  record=R.model_record(model_spec), layer=layer,
                                  data_name=data_name, imagetext=imagetext,
                                  pairs=out["pairs"], comparison=comparison,
                                  index_link=index_link)
    return out


def _with_iou(pairs: list[dict], dissected) -> list[dict]:
    """``compare``'s pairs, each with its unit's best mask-based IoU as ``iou``."""
    for pair in pairs:
        pair["iou"] = float(dissected.best_iou[pair["unit"]])
    return pairs


def _write_report(ws, res, source, *, model: str, record: dict, layer: str,
                  data_name: str, imagetext: str, pairs, comparison,
                  index_link: str | None = None) -> str:
    """``describe.npz``, the units' top images under ``top/``, ``describe.json`` and
    ``describe.html`` (returns its path); ``pairs``: each unit's mask-based label
    beside its open one (``_with_iou``), or None without a dissection."""
    from jaxdissect import report
    from jaxdissect.report.describe import write_describe
    res.save(ws.path("describe.npz"))
    paths = report.write_unit_thumbnails(ws.folder, _thumbnails(source, res), subdir="top")
    units = res.units()
    for rec, pair in zip(units, pairs or ()):
        rec.update(dissect_label=pair["dissect"], agree=pair["agree"],
                   dissect_iou=pair["iou"])
    for rec in units:
        rec["image"] = paths.get(rec["unit"])
    return write_describe(ws.folder, {
        "model": model, **record, "layer": layer, "data": data_name,
        "num_images": source.num_examples, "imagetext": imagetext, "method": res.method,
        "options": res.options, "concepts": res.concepts, "units": units,
        "comparison": comparison}, index_link=index_link)
