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
    from jaxdissect import report
    from jaxdissect.experiments.describe import compare, describe_spec
    from jaxdissect.imagetext import load_imagetext, read_concepts
    from jaxdissect.pipeline.dissection import Dissection, dissect_into
    from jaxdissect.report.describe import write_describe
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
        res.save(ws.path("describe.npz"))
        paths = report.write_unit_thumbnails(ws.folder, _thumbnails(source, res),
                                             subdir="top")
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
        path = write_describe(ws.folder, {
            "model": model.name, **R.model_record(cfg.model, cfg.weights), "layer": layer,
            "data": data_name, "num_images": source.num_examples, "imagetext": cfg.imagetext,
            "method": res.method, "options": res.options, "concepts": res.concepts,
            "units": units, "comparison": comparison})
        final = ws.final_path(path)
    return DescribeOutcome(res, comparison, final, model, layer, concepts)
