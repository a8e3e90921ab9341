"""Real-image samplers for GAN training: which real scenes a batch draws, and how often."""

from __future__ import annotations

import numpy as np

from jaxdissect.world.vocab import LABELS, OBJECTS, label_id


def object_probs(text: str, object_seg: np.ndarray) -> tuple[np.ndarray, dict]:
    """``'name=power,...'`` and ``[n, H, W]`` object labels -> each image's probability,
    proportional to the product of ``(share / mean share) ** power``, and the object
    shares (relative to uniform sampling) this sampler shows the generator."""
    n = len(object_seg)
    # [n, labels] each image's pixel share of every label, in one pass
    counts = np.bincount((np.arange(n)[:, None] * len(LABELS)
                          + object_seg.reshape(n, -1)).ravel(), minlength=n * len(LABELS))
    shares = counts.reshape(n, len(LABELS)) / object_seg[0].size
    log_w = np.zeros(n)
    names = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in OBJECTS:
            raise ValueError(f"unknown object {name!r} in --object-weights; objects are "
                             f"{', '.join(OBJECTS)}")
        try:
            power = float(value)
        except ValueError:
            power = float("nan")
        if not np.isfinite(power):
            raise ValueError(f"--object-weights wants name=power (a number), got {item!r}")
        names[name] = power
        if power == 0:
            continue
        share = shares[:, label_id(name)]
        if share.min() <= 0:
            raise ValueError(f"--object-weights: some training images have no {name}, so a "
                             "weight by its share would never draw them (or only them)")
        log_w += power * np.log(share / share.mean())
    probs = np.exp(log_w - log_w.max())
    probs /= probs.sum()
    mean = shares.mean(axis=0)
    shown = {LABELS.names[i]: round(float(probs @ shares[:, i] / mean[i]), 3)
             for i in np.flatnonzero(mean >= 0.01)}
    return probs, {"powers": names, "shown_share_vs_uniform": shown,
                   "effective_images": round(float(1 / (probs ** 2).sum()))}
