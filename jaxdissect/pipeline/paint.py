"""The paint run: add or remove objects in generated images by turning a concept's
units on or off in a region (GANPaint; the paper's "Applications").

Dissects the generator layer over z samples (cached, as the intervention run does),
takes each edited concept's ``units`` best-IoU units, and paints every
``CONCEPT:on|off:y0,x0,y1,x1`` edit (box as fractions of the image) on ``num_z``
latents, all edits in one vmapped program (``experiments.paint``). "On" sets the units
to their 99.5% quantile levels from the dissection. The segmenter measures the
concept's pixels inside the box before and after. Writes ``OUT/paint.html``,
``paint.json``, ``painted.png`` (grid), ``images/*.png``, ``painted.npy`` (``[edits, z,
H, W, 3]`` in [0, 1]) and ``OUT/dissect/``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from jaxdissect.errors import UserError
from jaxdissect.pipeline import resolve as R
from jaxdissect.pipeline.config import PaintConfig
from jaxdissect.pipeline.dissection import Dissection, dissect_into
from jaxdissect.pipeline.intervention import check_concepts
from jaxdissect.pipeline.workspace import open_workspace


@dataclasses.dataclass(frozen=True)
class PaintOutcome:
    """``result``: the ``PaintResult``; ``page``: the final path of ``paint.html``."""
    result: Any
    page: str
    out: str


def parse_edit(spec: str):
    parts = spec.split(":")
    if len(parts) != 3:
        raise UserError(f"--edit {spec!r}: expected CONCEPT:on|off:y0,x0,y1,x1")
    concept, mode, box = parts
    if mode not in ("on", "off"):
        raise UserError(f"--edit {spec!r}: mode must be 'on' or 'off', got {mode!r}")
    try:
        box = tuple(float(v) for v in box.split(","))
    except ValueError:
        raise UserError(f"--edit {spec!r}: box must be four numbers y0,x0,y1,x1") from None
    if len(box) != 4:
        raise UserError(f"--edit {spec!r}: box must be four numbers y0,x0,y1,x1")
    return concept, mode, box


def default_edits(dres) -> list[str]:
    labels = dres.labels
    counts = np.bincount(dres.best_label[dres.labelled], minlength=len(labels))
    objects = [i for i in range(1, len(labels)) if labels.categories[i] == "object"] or \
        list(range(1, len(labels)))
    best = labels.names[max(objects, key=lambda i: (counts[i], dres.iou[:, i].max()))]
    return [f"{best}:off:0,0,1,0.5", f"{best}:on:0,0.5,1,1"]


def run_paint(cfg: PaintConfig) -> PaintOutcome:
    """The ``jaxdissect paint`` run (see the module docstring)."""
    import jax
    import jax.numpy as jnp

    from jaxdissect.data.source import ZSource
    from jaxdissect.experiments import paint
    from jaxdissect.experiments.intervene import split_generator
    from jaxdissect.report import applications as A
    edits_spec = [parse_edit(s) for s in cfg.edit]   # fail early on bad syntax
    for _, _, box in edits_spec:
        paint.box_mask((4, 4), box)                  # range check
    if cfg.quantile < 0.005 and (not edits_spec or any(m == "on" for _, m, _ in edits_spec)):
        raise UserError("turning units on needs their 99.5% levels; use --quantile >= 0.005")
    model = R.load_model(cfg.model, cfg.weights)
    if model.kind != "generator":
        raise UserError(f"{cfg.model!r} is a classifier; painting needs a generator")
    layer = cfg.layer or model.default_layer
    source = R.load_data("z", model, cfg.num_samples, cfg.seed)
    seg_name = R.default_segmenter(model, "z", cfg.segmenter)
    segmenter = R.load_segmenter(seg_name, source, model)
    check_concepts(segmenter.labels, [concept for concept, _, _ in edits_spec])
    out = cfg.out or os.path.join("results", f"paint-{os.path.basename(model.name)}-{layer}")
    d = Dissection(model, cfg.model, layer, source, segmenter, seg_name, f"z@{cfg.seed}",
                   1 if cfg.seg_downsample is None else cfg.seg_downsample, cfg.upsample,
                   cfg.quantile, cfg.miniou, cfg.batch_size, progress=cfg.progress,
                   model_weights=cfg.weights)
    with open_workspace(out, "paint", cfg.force) as ws:
        dres, _ = dissect_into(d, ws.part("dissect"), index_link=os.path.join("..",
                                                                              "paint.html"))
        high = dres.levels.get(0.005)
        if not edits_spec:
            edits_spec = [parse_edit(s) for s in default_edits(dres)]
        if high is None and any(m == "on" for _, m, _ in edits_spec):
            raise UserError("turning units on needs their 99.5% levels; use --quantile > 0.005")
        z = ZSource(cfg.num_z, model.z_dim, cfg.z_seed).batch(0, cfg.num_z)["z"]
        acts_shape = jax.eval_shape(lambda p, zz: model.activations(p, zz, layer),
                                    model.params, jnp.asarray(z)).shape
        image = np.asarray(model.images(model.run(model.params, jnp.asarray(z[:1]))[0]))
        image_hw = image.shape[1:3]
        stack, edits = [], []
        for concept, mode, box in edits_spec:
            units = paint.concept_units(dres.iou, dres.labels.names, concept, cfg.units)
            grid = paint.region_to_grid(paint.box_mask(image_hw, box), acts_shape[1:3])
            stack.append(paint.paint_edit(units, acts_shape[3], grid, mode, high))
            values = np.asarray(high)[units] if mode == "on" else np.zeros(len(units))
            edits.append(dict(concept=concept, mode=mode, box=tuple(box),
                              units=np.asarray(units, np.int64),
                              unit_iou=np.asarray(dres.iou[units, dres.labels.index(concept)],
                                                  np.float64),
                              values=np.asarray(values, np.float64)))
        split = split_generator(model, layer)
        measure = not isinstance(segmenter, R.TruthSegmenter)
        regions = labels = None
        if measure:
            seg_hw = tuple(jax.eval_shape(segmenter,
                                          jnp.zeros((1,) + image_hw + (3,))).shape[2:])
            regions = np.stack([paint.box_mask(seg_hw, e["box"]) for e in edits])
            labels = [dres.labels.index(e["concept"]) for e in edits]
        res = paint.paint_source(split, ZSource(cfg.num_z, model.z_dim, cfg.z_seed),
                                 paint.stack_edits(stack), batch_size=cfg.batch_size,
                                 segment=segmenter if measure else None, labels=labels,
                                 regions=regions)
        painted, base = res["images"], res["base"]                # [E, b, H, W, 3], [b, ...]
        if measure:
            for rec, region, before, after in zip(edits, regions, res["before"], res["after"]):
                rec.update(segmenter=seg_name, region_pixels=int(region.sum()), before=before,
                           after=after)
        result = paint.PaintResult(model=model.name, layer=layer, z_seed=cfg.z_seed,
                                   num_z=cfg.num_z, dissection_samples=cfg.num_samples,
                                   edits=tuple(paint.PaintEdit(**e) for e in edits))
        grid_png = write_images(ws.folder, result, base, painted, len(z))
        page = ws.final_path(A.write_paint(ws.folder, result, grid_png,
                                           dissection_link="dissect/report.html"))
    return PaintOutcome(result, page, os.path.abspath(out))


def write_images(folder: str, result, base, painted, num_z: int) -> dict:
    """``painted.npy``, the grid ``painted.png`` and ``images/*.png`` of each edit;
    returns the grid's record (``report.pictures.paint_grid``)."""
    from PIL import Image

    from jaxdissect.report import applications as A
    from jaxdissect.report.pictures import paint_grid
    records = [e.to_json() for e in result.edits]
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    np.save(os.path.join(folder, "painted.npy"), painted)
    grid_png = paint_grid(folder, base, painted, [r["box"] for r in records])
    for e, rec in enumerate(records):
        for i in range(num_z):
            Image.fromarray(A.to_u8(painted[e, i])).save(os.path.join(
                folder, "images", f"edit{e}_{rec['concept']}_{rec['mode']}_z{i}.png"))
    return grid_png
