"""NumPy oracles of both IoU rules on all the data at once: the PNAS union and
NetDissect's category-aware union, the latter written as NetDissect-Lite's tally
loop states it (per image and unit: the labels under the active pixels, their
categories, the active count charged to every category touched)."""

import numpy as np


def counts(acts, seg, thresholds, num_labels):
    """``acts`` ``[n, h, w, u]``, ``seg`` ``[n, K, h, w]`` -> inter ``[u, L]``,
    unit_area ``[u]``, label_area ``[L]`` (a pixel counts once per label)."""
    a = acts > np.asarray(thresholds)
    inter = np.zeros((acts.shape[-1], num_labels), np.int64)
    label_area = np.zeros(num_labels, np.int64)
    for c in range(num_labels):
        s = (seg == c).any(axis=1)
        label_area[c] = s.sum()
        inter[:, c] = (a & s[..., None]).sum(axis=(0, 1, 2))
    return inter, a.sum(axis=(0, 1, 2)), label_area


def category_area(acts, seg, thresholds, categories):
    """NetDissect's ``tally_units_cat`` ``[u, C]``: image by image, each unit's
    active count is added to every category that a label under its active pixels
    belongs to (label 0 and out-of-range labels belong to none)."""
    cats = np.asarray(categories)
    num_labels, num_cats = len(cats), cats.max() + 1
    onehot = np.zeros((num_labels, num_cats), np.int64)
    onehot[cats >= 0, cats[cats >= 0]] = 1
    onehot[0] = 0
    out = np.zeros((acts.shape[-1], num_cats), np.int64)
    for i in range(len(acts)):
        for u in range(acts.shape[-1]):
            active = acts[i, :, :, u] > thresholds[u]
            under = seg[i][:, active].ravel()
            under = under[(under >= 0) & (under < num_labels)]
            per_cat = np.bincount(under, minlength=num_labels) @ onehot
            out[u] += active.sum() * (per_cat > 0)
    return out


def iou(acts, seg, thresholds, num_labels, categories=None):
    """IoU ``[u, L]`` under the PNAS rule, or NetDissect's if ``categories``
    (each label's category index, -1 for none) is given."""
    inter, unit_area, label_area = counts(acts, seg, thresholds, num_labels)
    if categories is None:
        unit_side = unit_area[:, None]
    else:
        area = category_area(acts, seg, thresholds, categories)
        cats = np.asarray(categories)
        unit_side = np.where(cats >= 0, area[:, np.maximum(cats, 0)], 0)
    union = unit_side + label_area[None] - inter
    out = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    out[:, 0] = 0
    return out
