"""How world-like a generator's samples are, judged by the world segmenter.

The figures: the fraction of generated pixels the segmenter gives a
non-background object label, and, for every object covering at least 2% of real
pixels, the ratio of its pixel share in generated images to its share in real
images (target: within a factor of 2). Real shares are reported two ways: the
renderer's ground truth, and the segmenter run on real images rendered at the
generator's resolution (the same path generated images take).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxdissect.world.generator import generate, sample_z
from jaxdissect.world.source import class_indices, render, render_mixed
from jaxdissect.world.vocab import LABELS, OBJECTS, layer_ids

#: objects covering at least this share of real pixels are held to the ratio target
MIN_REAL_SHARE = 0.02
#: generated/real share must lie in [1 / MAX_RATIO, MAX_RATIO]
MAX_RATIO = 2.0


def label_counts(labels, num_labels: int = len(LABELS)) -> np.ndarray:
    """``[...]`` integer label map -> ``[num_labels]`` int64 pixel counts."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_labels):
        raise ValueError(f"labels must lie in [0, {num_labels}), got range "
                         f"[{labels.min()}, {labels.max()}]")
    return np.bincount(labels.reshape(-1).astype(np.int64), minlength=num_labels)


def generated_object_counts(model, params, segmenter, num: int, z_seed: int = 1,
                            batch: int = 100) -> np.ndarray:
    """Object-layer pixel counts ``[len(LABELS)]`` of the segmenter on ``num`` samples
    (latents ``0 .. num`` of ``ZSource(seed=z_seed)``)."""
    counts = np.zeros(len(LABELS), np.int64)
    for a in range(0, num, batch):
        z = sample_z(model, min(batch, num - a), z_seed, start=a)
        seg = segmenter(generate(model, params, z))
        counts += label_counts(np.asarray(seg[:, 0]))
    return counts


def real_object_counts(segmenter, num: int, world_seed: int, size: int,
                       batch: int = 100, classes=None, closeup: float | None = None,
                       closeup_every: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(ground_truth, segmented)`` object pixel counts ``[len(LABELS)]`` of ``num``
    world images of ``world_seed`` rendered at ``size`` x ``size`` (of the scene
    ``classes`` only, when given: the generator's training classes; when ``closeup``
    is given, framed as ``render_mixed(..., closeup_every, zoom=closeup)`` frames
    them, as the generator's training images were)."""
    indices = (np.arange(num) if classes is None
               else class_indices(world_seed, classes, num))
    truth = np.zeros(len(LABELS), np.int64)
    seg = np.zeros(len(LABELS), np.int64)
    for a in range(0, num, batch):
        part = indices[a:a + batch]
        b = (render_mixed(world_seed, part, size, closeup_every, closeup) if closeup
             else render(world_seed, part, size))
        truth += label_counts(b["seg"][:, 0])
        images = jnp.asarray(b["image"], jnp.float32) / 255.0
        seg += label_counts(np.asarray(segmenter(images)[:, 0]))
    return truth, seg


def compare_shares(generated: np.ndarray, real: np.ndarray) -> dict:
    """Figures from object pixel counts ``[len(LABELS)]`` of generated and real images:
    ``nonbackground`` (generated share of pixels with an object label),
    ``objects`` {name: {real, generated, ratio}} for objects with real share >=
    ``MIN_REAL_SHARE``, ``worst_ratio`` (max over them of max(r, 1/r)) and ``ok``."""
    g = generated / max(generated.sum(), 1)
    r = real / max(real.sum(), 1)
    objects = {}
    for i in layer_ids("object"):
        if r[i] >= MIN_REAL_SHARE:
            ratio = float(g[i] / r[i])
            objects[LABELS.names[i]] = {"real": round(float(r[i]), 4),
                                        "generated": round(float(g[i]), 4),
                                        "ratio": round(ratio, 3)}
    worst = max((max(o["ratio"], 1 / max(o["ratio"], 1e-9)) for o in objects.values()),
                default=1.0)
    nonbg = float(1.0 - g[0])
    return {"nonbackground": round(nonbg, 4), "objects": objects,
            "worst_ratio": round(worst, 3), "ok": bool(worst <= MAX_RATIO)}


def measure_generator(model, params, segmenter, num: int = 1000, z_seed: int = 1,
                      world_seed: int = 1004, classes=None,
                      closeup: float | None = None, closeup_every: int = 1) -> dict:
    """All figures: generated samples against real images of a held-out world seed
    (of the generator's training ``classes``, framed as it was trained: close-ups
    by ``closeup`` and ``closeup_every``), real shares both from ground truth and
    from the segmenter."""
    gen = generated_object_counts(model, params, segmenter, num, z_seed)
    truth, seg = real_object_counts(segmenter, num, world_seed, model.resolution,
                                    classes=classes, closeup=closeup,
                                    closeup_every=closeup_every)
    vs_truth, vs_seg = compare_shares(gen, truth), compare_shares(gen, seg)
    gshare = gen / max(gen.sum(), 1)
    return {
        "samples": num, "z_seed": z_seed, "real_world_seed": world_seed,
        "classes": list(classes) if classes else "all", "closeup": closeup,
        "closeup_every": closeup_every if closeup else None,
        "resolution": model.resolution,
        "nonbackground": vs_truth["nonbackground"],
        "real_segmented_nonbackground": compare_shares(seg, seg)["nonbackground"],
        "vs_ground_truth": vs_truth, "vs_segmented_real": vs_seg,
        "generated_shares": {n: round(float(gshare[LABELS.index(n)]), 4) for n in OBJECTS},
    }
