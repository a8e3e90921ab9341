"""A dissection as one resolved run: the compute function, the (cached) passes, the
label significance pass, unit thumbnails and the report.

:func:`resolve_dissect` turns a :class:`~jaxdissect.pipeline.config.DissectConfig` into
a :class:`Dissection` (every name loaded, every default chosen); :func:`dissect_into`
runs one in a :class:`~jaxdissect.pipeline.workspace.Workspace` (the other experiments
dissect this way too); :func:`run_dissect` does both and writes the results folder.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from jaxdissect.errors import UserError
from jaxdissect.pipeline import resolve as R
from jaxdissect.pipeline.config import DissectConfig
from jaxdissect.pipeline.workspace import Workspace, open_workspace


@dataclasses.dataclass(frozen=True)
class Dissection:
    """A resolved dissection: ``model`` a ``ModelSpec`` loaded from ``model_spec``,
    ``source`` an image or z source, ``segmenter`` loaded from ``segmenter_name``;
    every other field a setting as in ``DissectConfig``, defaults resolved."""
    model: Any
    model_spec: str
    layer: str
    source: Any
    segmenter: Any
    segmenter_name: str
    data_name: str
    seg_downsample: int = 1
    upsample: str | None = None
    quantile: float = 0.01
    miniou: float = 0.04
    batch_size: int | str = 32  # or "auto" (dissect only)
    topk: int = 5
    iou_rule: str = "pnas"
    significance: bool = False
    max_p: float | None = None
    permutations: int = 1000
    progress: bool = True
    model_weights: str | None = None   # --weights (identified by the fingerprint)

    def settings(self) -> dict:
        """Every setting (for the cache's identity; the objects are identified apart)."""
        skip = {"model", "layer", "source", "segmenter", "progress", "model_weights"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in skip}


@dataclasses.dataclass(frozen=True)
class DissectOutcome:
    """``result`` (a ``DissectResult``); ``report``: the final path of ``report.html``
    (None in the processes that do not write); ``out``: the results folder."""
    result: Any
    report: str | None
    out: str
    dissection: Dissection


def resolve_dissect(cfg: DissectConfig) -> tuple[Dissection, str]:
    """``(Dissection, results folder)`` of ``cfg``, the model's defaults resolved."""
    model = R.load_model(cfg.model, cfg.weights)
    layer = cfg.layer or model.default_layer
    data = R.default_data(model, cfg.data)
    seed = R.default_seed(model, cfg.seed)
    source = R.load_data(data, model, cfg.num_images, seed, skip_bad=cfg.skip_bad_images)
    seg_name = R.default_segmenter(model, data, cfg.segmenter)
    segmenter = R.load_segmenter(seg_name, source, model)
    out = cfg.out or os.path.join("results", "-".join(
        s.replace("/", "_").replace(":", "_") for s in (
            os.path.basename(model.name.rstrip("/")), layer, os.path.basename(
                data.rstrip("/")), seg_name)))
    return Dissection(
        model, cfg.model, layer, source, segmenter, seg_name, f"{data}@{seed}",
        R.default_seg_downsample(cfg.seg_downsample, seg_name), cfg.upsample, cfg.quantile,
        cfg.miniou, cfg.batch_size, cfg.topk, cfg.iou_rule, cfg.significance, cfg.max_p,
        cfg.permutations, cfg.progress, cfg.weights), out


def run_dissect(cfg: DissectConfig) -> DissectOutcome:
    """Dissect as ``jaxdissect dissect`` does: ``OUT/report.html``, ``report.json``,
    ``iou.npy``, ``tally.csv``, ``concepts.svg``, ``units/`` and ``cache/``."""
    d, out = resolve_dissect(cfg)
    with open_workspace(out, "dissect", cfg.force) as ws:
        res, report = dissect_into(d, ws)
    return DissectOutcome(res, report, os.path.abspath(out), d)


def make_compute(model, layer: str, segmenter, seg_downsample: int = 1):
    """``compute(batch, params) -> (acts [b,h,w,u], seg [b,K,H,W])``, for
    ``dissect(..., params=model.params)`` (the weights are then an argument of the
    compiled step, not constants folded into it), and ``forward(batch) -> (acts,
    images)`` with ``model.params``. ``seg_downsample`` d keeps the centre pixel of each
    d x d block of the segmentation (the reference dissects at a quarter of the image
    size)."""
    import jax.numpy as jnp

    from jaxdissect.experiments.dissect import spec_compute, spec_forward
    # the data's own annotation (world truth, Broden) rather than a model's
    truth = isinstance(segmenter, R.TruthSegmenter) or getattr(segmenter, "reads_batch", False)

    def segment(batch, images):
        seg = jnp.asarray(batch["seg"]) if truth else segmenter(images)
        if seg_downsample > 1:
            o = seg_downsample // 2
            seg = seg[:, :, o::seg_downsample, o::seg_downsample]
        return seg.astype(jnp.int32)

    forward_with = spec_forward(model, layer)

    def forward(batch):
        return forward_with(batch, model.params)

    return spec_compute(model, layer, segment), forward


def dissect_into(d: Dissection, ws: Workspace, index_link: str | None = None):
    """Dissect ``d`` into ``ws`` (its passes cached in ``ws``'s ``cache/`` under the
    complete run's identity), test its labels if asked, write the report with
    thumbnails and NetDissect's ``tally.csv``. Returns ``(DissectResult, final path of
    report.html or None where this process does not write)``."""
    import jax

    from jaxdissect import report
    from jaxdissect.experiments.dissect import dissect
    from jaxdissect.runtime import hosts
    from jaxdissect.runtime.cache import atomic_write
    model, source, layer = d.model, d.source, d.layer
    R.check_layer(model, layer)
    compute, forward = make_compute(model, layer, d.segmenter, d.seg_downsample)
    example = {k: v for k, v in source.batch(0, 1).items()}
    try:
        acts_s, seg_s = jax.eval_shape(compute, example, model.params)
    except ValueError as e:
        raise UserError(f"layer {layer!r}: {e}") from None
    image_hw = example["image"].shape[1:3] if "image" in example else None
    try:
        up = model.upsampler(layer, acts_s.shape[1:3], seg_s.shape[2:], image_hw, d.upsample)
    except ValueError as e:
        raise UserError(str(e)) from None
    if d.batch_size == "auto":  # the largest batch that fits the device (runtime.memory)
        from jaxdissect.runtime.memory import dissect_batch_size
        d = dataclasses.replace(d, batch_size=dissect_batch_size(
            compute, source, len(d.segmenter.labels), params=model.params, upsample=up,
            levels=(d.quantile, 0.005) if d.quantile > 0.005 else (d.quantile,)))
    cache = ws.cache(model=model, layer=layer, data=source, segmenter=d.segmenter,
                     **d.settings(), model_upsample=model.upsample)
    res = dissect(compute, source, d.segmenter.labels, upsample=up, quantile=d.quantile,
                  levels=(0.005,) if d.quantile > 0.005 else (), miniou=d.miniou,
                  batch_size=d.batch_size, topk=d.topk, cache=cache, progress=d.progress,
                  params=model.params, iou_rule=d.iou_rule)
    sig_summary = None
    if (d.significance or d.max_p is not None) and res.labelled.any():
        res, sig_summary = label_significance(res, compute, source, up, model.params,
                                              cache, d)
    if not hosts.is_writer():  # the other processes tallied their slices; one writes
        return res, None
    strips = unit_thumbnails(forward, up, source, res, d.topk, cache)
    paths = report.write_unit_thumbnails(ws.folder, strips)
    units = []
    for rec in res.units():
        rec["image"] = paths.get(rec["unit"])
        units.append(rec)
    summary = {"model": model.name, **R.model_record(d.model_spec, d.model_weights), "layer": layer,
               "quantile": d.quantile, "miniou": d.miniou,
               "num_images": source.num_examples, "segmenter": d.segmenter_name,
               "data": d.data_name, "skipped_images": R.skipped_images(source),
               "seg_grid": list(seg_s.shape[2:]),
               "units": units, "dissection": res.to_json(),
               "iou_shape": list(res.iou.shape), "significance": sig_summary}
    atomic_write(ws.path("iou.npy"), lambda f: np.save(f, res.iou))
    write_tally_csv(res, source, ws.folder)
    path = report.write_dissection(ws.folder, summary, index_link=index_link)
    return res, ws.final_path(path)


def label_significance(res, compute, source, up, params, cache, d: Dissection):
    """The significance sweep of ``res``'s labels: ``(res carrying it, report summary)``."""
    from jaxdissect.experiments.label_significance import significance
    sig = significance(compute, source, res, upsample=up, params=params,
                       batch_size=d.batch_size, permutations=d.permutations, cache=cache,
                       progress=d.progress)
    summary = {"tested": len(sig.units), "permutations": sig.permutations,
               "level": sig.level, "fdr": 0.01,
               "discoveries": int(sig.discoveries(0.01).sum()), "max_p": d.max_p}
    return res.with_significance(sig, d.max_p), summary


def write_tally_csv(res, source, outdir: str) -> str:
    """``outdir/tally.csv`` in NetDissect's schema (Broden data: its category order)."""
    from jaxdissect.data.broden import innermost
    from jaxdissect.report.netdissect_csv import write_csv
    broden = innermost(source)
    order = None if broden is None else [
        c for c in broden.categories if c in res.labels.category_names]
    return write_csv(res, os.path.join(outdir, "tally.csv"), order)


def unit_thumbnails(forward, up, source, res, topk, cache=None):
    """``{unit: (images [k,H,W,3], masks [k,H,W])}`` for each unit's top images. With
    ``cache`` (the dissection's ``RunCache``), the images and masks are computed once
    per run and read back by a re-run (``runtime.computed``)."""
    import jax

    from jaxdissect.runtime.computed import computed
    top = np.where(res.fires[:, None], res.topk_images[:, :topk], -1)
    wanted = sorted({int(i) for i in top.ravel() if i >= 0})
    if not wanted:
        return {}
    images_s = jax.eval_shape(lambda b: forward(b)[1], source.batch(0, 1)).shape
    image_hw = tuple(images_s[1:3])
    template = {"images": jax.ShapeDtypeStruct((len(wanted),) + tuple(images_s[1:]),
                                               np.float32),
                "masks": jax.ShapeDtypeStruct(top.shape + image_hw, np.bool_)}
    made = computed(cache, "unit-thumbnails", template,
                    lambda: _thumbnail_arrays(forward, up, source, res, top, wanted,
                                              image_hw),
                    top=top, thresholds=res.thresholds)
    row = {i: j for j, i in enumerate(wanted)}
    out = {}
    for u in range(top.shape[0]):
        shown = [k for k in range(top.shape[1]) if top[u, k] >= 0]
        if shown:             # a unit never above its threshold has no top images
            out[u] = (made["images"][[row[int(top[u, k])] for k in shown]],
                      made["masks"][u, shown])
    return out


def _thumbnail_arrays(forward, up, source, res, top, wanted, image_hw) -> dict:
    """``images [len(wanted), H, W, 3]`` float32 (the images the model saw, or made)
    and ``masks [units, k, H, W]`` (each unit's region over its threshold in its
    ``k``-th top image; False where it has none): the model run on ``wanted``."""
    import jax

    from jaxdissect.report.thumbs import resize_mask
    fwd = jax.jit(lambda b: (lambda a, im: (up(a), im))(*forward(b)))
    acts_up, images = {}, {}
    for start in range(0, len(wanted), 32):
        idx = wanted[start:start + 32]
        parts = [source.batch(i, i + 1) for i in idx]
        batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        a, im = fwd(batch)
        for j, i in enumerate(idx):
            acts_up[i], images[i] = np.asarray(a[j]), np.asarray(im[j], np.float32)
    masks = np.zeros(top.shape + tuple(image_hw), bool)
    for u, k in zip(*np.nonzero(top >= 0)):
        i = int(top[u, k])
        masks[u, k] = resize_mask(acts_up[i][..., u], float(res.thresholds[u]), image_hw)
    return {"images": np.stack([images[i] for i in wanted]), "masks": masks}


def unit_labels(res) -> list[tuple[str, str, float]]:
    """Each unit's ``(label or "-", category, best IoU)``."""
    return [(res.labels.names[res.best_label[u]] if res.labelled[u] else "-",
             res.labels.categories[res.best_label[u]], float(res.best_iou[u]))
            for u in range(res.num_units)]
