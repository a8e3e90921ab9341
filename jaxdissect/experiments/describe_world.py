"""Open-vocabulary labels checked against the world's ground truth: both labellings
of a world classifier's units (``experiments.describe`` and mask-based
``experiments.dissect`` with the world's ground-truth segmentation, the ``dissect``
command's settings for world data), their agreement on the units dissection labels,
the units a distractor word labels, and the agreement's chance level (the open labels
shuffled over the units, which keeps how often each word is used).

``measure(..., ceiling=True)`` also labels the units with the world's ground truth in
place of the image-text model (``truth_similarity``: how much of each probe image each
concept covers), the same scoring on the same top images: what a perfect image-text
model would reach, so the agreement's shortfall can be put on the model or on the
image-level method. On a randomly initialised classifier that reference is the chance
level that matters: its units do prefer some images (the brightest), and labels read
from the ground truth find that too; ``beyond_truth`` tests, unit by unit, whether the
open labels agree with dissection more often than the ground truth's labels do.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.experiments.describe import (
    compare,
    label_similarity,
    label_units,
    probe_tables,
)
from jaxdissect.experiments.dissect import dissect, spec_compute, spec_forward
from jaxdissect.models import vgg16
from jaxdissect.world import LABELS, classifier
from jaxdissect.world.imagetext import distractors
from jaxdissect.world.scenes import CLASS_NAMES
from jaxdissect.world.train.imagetext import shares, word_targets


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


def truth_similarity(source, chunk: int = 500) -> np.ndarray:
    """``[N, 52]`` float32: the world's ground truth as an image-concept score for its
    52 concepts (``LABELS.names[1:]``), ``min(1, share / FULL_SHARE)`` of the pixels
    each covers in each probe image (``world.train.imagetext.word_targets``)."""
    n, out = source.num_examples, []
    for a in range(0, n, chunk):
        r = source.render_u8(a, min(a + chunk, n))
        out.append(word_targets(shares(r["seg"], r["label"]))[:, :len(LABELS) - 1])
    return np.concatenate(out)


def similarity_summary(tables, imagetext, concepts) -> dict:
    """How the image-text model places the world's words and the distractors against
    the probe images: the mean cosine similarity, and the mean over images of each
    group's highest."""
    text = np.asarray(imagetext.encode_texts(list(concepts)), np.float32)
    img = tables.embeddings / np.linalg.norm(tables.embeddings, axis=1, keepdims=True)
    sim = img @ (text / np.linalg.norm(text, axis=1, keepdims=True)).T
    far = np.isin(concepts, distractors(concepts))
    return {group: {"mean": round(float(sim[:, cols].mean()), 4),
                    "mean_of_max": round(float(sim[:, cols].max(1).mean()), 4)}
            for group, cols in (("world_words", ~far), ("distractors", far)) if cols.any()}


def beyond_truth(open_pairs, truth_pairs) -> dict:
    """Whether the open labels agree with dissection on more units than the labels
    read from the ground truth (the same units, ``pairs`` of ``compare``): ``only_open``
    and ``only_truth`` count the units where one agrees and the other does not, and
    ``p_value`` is the one-sided exact sign (McNemar) test of ``only_open`` among
    them (1 when they never differ)."""
    from scipy.stats import binom
    a = {p["unit"]: p["agree"] for p in open_pairs}
    b = {p["unit"]: p["agree"] for p in truth_pairs}
    only_open = sum(a[u] and not b[u] for u in a)
    only_truth = sum(b[u] and not a[u] for u in a)
    n = only_open + only_truth
    p = float(binom.sf(only_open - 1, n, 0.5)) if n else 1.0
    return {"only_open": int(only_open), "only_truth": int(only_truth), "p_value": p}


#: the labellings ``measure`` compares: the paper's SoftWPMI, with a smaller ``lam``,
#: WPMI and cos^3 (``stats.softwpmi``)
METHODS = {"softwpmi": ("softwpmi", {}), "softwpmi_lam0.6": ("softwpmi", {"lam": 0.6}),
           "wpmi": ("wpmi", {}), "cos3": ("cos3", {})}


def _summary(described, dissected, concepts) -> dict:
    cmp = compare(described, dissected, distractors(concepts))
    return {"method": described.method, "options": described.options, "agree": cmp["agree"],
            "agreement_rate": round(cmp["rate"], 4),
            "near_agree": cmp["near_agree"], "near_rate": round(cmp["near_rate"], 4),
            "distractor_wins": cmp["distractor_wins"],
            "distractor_rate": round(cmp["distractor_rate"], 4),
            "distinct_open_labels": len({p["open"] for p in cmp["pairs"]}),
            "chance": chance(described, dissected),
            "pairs": [p for p in cmp["pairs"] if p["dissect"] is not None]}


def measure(spec, layer, source, imagetext, concepts, methods=None,
            ceiling: bool = False) -> dict:
    """Both labellings of ``layer``'s units, compared per scoring ``methods``
    (``{name: (method, options)}``, default ``METHODS``) on one sweep; with
    ``ceiling``, also with ``truth_similarity`` in place of the image-text model
    (under ``"ceiling"``, and ``"beyond_truth"``: :func:`beyond_truth` per method)."""
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
           "similarity": similarity_summary(tables, imagetext, concepts), "methods": {}}
    for name, (method, options) in methods.items():
        described = label_units(tables, imagetext, concepts, method, **options)
        out["methods"][name] = _summary(described, dissected, concepts)
    if ceiling:
        sim, names = truth_similarity(source), list(LABELS.names[1:])
        out["ceiling"] = {name: _summary(label_similarity(sim, tables.acts, names, method,
                                                          **options), dissected, names)
                          for name, (method, options) in methods.items()}
        out["beyond_truth"] = {name: beyond_truth(out["methods"][name]["pairs"],
                                                  out["ceiling"][name]["pairs"])
                               for name in methods}
    return out
