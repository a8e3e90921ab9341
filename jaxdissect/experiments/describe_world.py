"""Open-vocabulary labels checked against the world's ground truth: both labellings
of a world classifier's units (``experiments.describe`` and mask-based
``experiments.dissect`` with the world's ground-truth segmentation, the ``dissect``
command's settings for world data), their agreement on the units dissection labels,
the units a distractor word labels, and the agreement's chance level (the open labels
shuffled over the units, which keeps how often each word is used).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.experiments.describe import compare, label_units, probe_tables
from jaxdissect.experiments.dissect import dissect, spec_compute, spec_forward
from jaxdissect.models import vgg16
from jaxdissect.world import LABELS, classifier
from jaxdissect.world.imagetext import distractors
from jaxdissect.world.scenes import CLASS_NAMES


def random_spec(seed: int = 0):
    """The world classifier's architecture with fresh random weights."""
    model = classifier.WorldVGG16()
    params = model.init(jax.random.key(seed), jnp.zeros((1, 64, 64, 3)))["params"]
    return vgg16.spec(model, params, name=f"world-classifier-random{seed}",
                      input_size=(64, 64), class_names=CLASS_NAMES, resize="stretch")


def truth_dissection(spec, layer: str, source, batch_size: int = 32):
    """Mask-based dissection with the world's ground truth on every 4th pixel (the
    ``dissect`` command's defaults for world data)."""
    compute = spec_compute(spec, layer, lambda batch, images:
                           jnp.asarray(batch["seg"])[:, :, 2::4, 2::4].astype(jnp.int32))
    example = source.batch(0, 1)
    example["index"] = np.zeros(1, np.int32)
    acts_s, seg_s = jax.eval_shape(compute, example, spec.params)
    up = spec.upsampler(layer, acts_s.shape[1:3], seg_s.shape[2:], (source.size,) * 2, None)
    return dissect(compute, source, LABELS, upsample=up, params=spec.params,
                   batch_size=batch_size, progress=False)


def chance(described, dissected, permutations: int = 2000, seed: int = 0) -> dict:
    """Agreement when the open labels are shuffled over the units."""
    labelled = np.flatnonzero(dissected.labelled)
    truth = [dissected.unit_label(u) for u in labelled]
    labels = np.array(described.labels(), dtype=object)
    observed = sum(labels[u] == t for u, t in zip(labelled, truth))
    rng = np.random.default_rng(seed)
    null = np.array([sum(p[u] == t for u, t in zip(labelled, truth))
                     for p in (rng.permutation(labels) for _ in range(permutations))])
    return {"observed": int(observed), "chance_mean": float(null.mean()),
            "chance_rate": float(null.mean() / max(len(labelled), 1)),
            "p_value": float((1 + (null >= observed).sum()) / (1 + permutations)),
            "permutations": permutations}


#: the labellings ``measure`` compares: the paper's SoftWPMI, with a smaller ``lam``,
#: and WPMI (``stats.softwpmi``)
METHODS = {"softwpmi": ("softwpmi", {}), "softwpmi_lam0.6": ("softwpmi", {"lam": 0.6}),
           "wpmi": ("wpmi", {})}


def measure(spec, layer, source, imagetext, concepts, methods=None) -> dict:
    """Both labellings of ``layer``'s units, compared per scoring ``methods``
    (``{name: (method, options)}``, default ``METHODS``) on one sweep."""
    methods = METHODS if methods is None else methods
    t0 = time.time()
    dissected = truth_dissection(spec, layer, source)
    t1 = time.time()
    tables = probe_tables(spec_forward(spec, layer), source, imagetext, params=spec.params,
                          progress=False)
    t2 = time.time()
    out = {"model": spec.name, "layer": layer, "units": dissected.num_units,
           "labelled_by_dissection": int(dissected.labelled.sum()),
           "dissect_seconds": round(t1 - t0, 1), "describe_sweep_seconds": round(t2 - t1, 1),
           "methods": {}}
    for name, (method, options) in methods.items():
        described = label_units(tables, imagetext, concepts, method, **options)
        cmp = compare(described, dissected, distractors(concepts))
        out["methods"][name] = {
            "method": method, "options": described.options, "agree": cmp["agree"],
            "agreement_rate": round(cmp["rate"], 4),
            "near_agree": cmp["near_agree"], "near_rate": round(cmp["near_rate"], 4),
            "distractor_wins": cmp["distractor_wins"],
            "distractor_rate": round(cmp["distractor_rate"], 4),
            "distinct_open_labels": len({p["open"] for p in cmp["pairs"]}),
            "chance": chance(described, dissected),
            "pairs": [p for p in cmp["pairs"] if p["dissect"] is not None]}
    return out
