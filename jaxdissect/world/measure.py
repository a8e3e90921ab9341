"""Measurements of the shipped world models used by ``scripts/measure_world.py`` and,
at reduced size, by the tests: classifier dissection against ground truth and
against the trained segmenter."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxdissect import taps
from jaxdissect.experiments.dissect import DissectResult, dissect
from jaxdissect.models.vgg16 import preprocess
from jaxdissect.stats.upsample import Upsampler
from jaxdissect.world.source import WorldSource
from jaxdissect.world.vocab import LABELS


def dissect_classifier(model, params, source: WorldSource, segmenter=None, layer="conv5_3",
                       batch_size: int = 50, progress: bool = False) -> DissectResult:
    """Dissect ``layer`` of the world classifier on ``source``'s images, against the
    ground-truth segmentation (``segmenter=None``) or a ``Segmenter``'s output."""
    size = source.size
    geometry = model.layer_geometry(layer)

    def compute(batch, params):
        x = jnp.asarray(batch["image"])
        acts = taps.run(model.apply, {"params": params}, preprocess(x),
                        capture=(layer,))[1][layer]
        seg = jnp.asarray(batch["seg"]) if segmenter is None else segmenter(x)
        return acts, seg.astype(jnp.int32)

    up = Upsampler.for_layers(geometry, (size, size), (size, size))
    return dissect(compute, source, LABELS, upsample=up, batch_size=batch_size,
                   progress=progress, topk=1, params=params)


def dissection_summary(res: DissectResult) -> dict:
    """Fraction of units labelled (best IoU > miniou) and the distinct concepts."""
    labelled = res.labelled
    concepts = sorted({res.labels.names[b] for b in res.best_label[labelled]})
    return {"units": int(res.num_units), "labelled": int(labelled.sum()),
            "labelled_fraction": float(labelled.mean()), "concepts": concepts,
            "num_concepts": len(concepts)}


def side_by_side(truth: DissectResult, seg: DissectResult) -> list[dict]:
    """Per unit: best label and IoU under ground truth, the IoU of that same label
    under the segmenter's output, and the segmenter's own best label and IoU."""
    rows = []
    for u in range(truth.num_units):
        t = int(truth.best_label[u])
        s = int(seg.best_label[u])
        rows.append({"unit": u, "truth_label": truth.labels.names[t],
                     "truth_iou": float(truth.best_iou[u]),
                     "same_label_seg_iou": float(seg.iou[u, t]),
                     "seg_label": seg.labels.names[s], "seg_iou": float(seg.best_iou[u])})
    return rows


def agreement(rows: list[dict], miniou: float = 0.04) -> float:
    """Among units labelled under ground truth, the share the segmenter labels the same."""
    lab = [r for r in rows if r["truth_iou"] > miniou]
    return float(np.mean([r["truth_label"] == r["seg_label"] for r in lab])) if lab else 0.0
