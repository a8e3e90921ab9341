"""Independent NumPy/PyTorch statements of the reference segmenters' rules, for tests.

Written from the reference's description (``netdissect/segmenter.py``), in its
own formulation (per-pixel loops over owners, ``scipy.ndimage.label`` for the
regions of the quadrant split), not from jaxdissect's code.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

UPP_MEAN_BGR = (102.9801, 115.9465, 122.7717)


def upp_numbering(labeldata: dict, all_parts: bool, quad: bool):
    """Reference numbering: (labels [(name, cat)], owners [(object index, [numbers])])."""
    objects, materials = labeldata["object"], labeldata["material"]
    mult = 5 if quad else 1
    first_part = (len(objects) - 1) * mult + 1 + (len(materials) - 1)
    owners = list(labeldata["object_part"]) if all_parts else ["sky", "building", "person"]
    part_names, part_num, owner_numbers = [], {}, []
    for owner in owners:
        nums = []
        for part in labeldata["object_part"][owner]:
            if part in objects:
                nums.append(objects.index(part))
            else:
                if part not in part_num:
                    part_num[part] = first_part + len(part_names)
                    part_names.append(part)
                nums.append(part_num[part])
        owner_numbers.append((objects.index(owner), nums))
    labels = [(n, "object") for n in objects]
    if quad:
        for suffix in "tlbr":
            labels += [(f"{n}-{suffix}", "part") for n in objects[1:]]
    labels += [(n, "material") for n in materials[1:]] + [(n, "part") for n in part_names]
    return labels, owner_numbers


def upp_rules_numpy(labeldata, obj_scores, mat_scores, part_list, all_parts, quad):
    """Scores ``[b, n, H, W]`` (parts: list per owner, in ``owners`` order) -> labels
    ``[b, 3, H, W]``, by explicit per-owner masking."""
    _, owners = upp_numbering(labeldata, all_parts, quad)
    mult = 5 if quad else 1
    n_obj = len(labeldata["object"]) - 1
    obj = obj_scores.argmax(1)
    mat = mat_scores.argmax(1)
    mat = np.where(mat > 0, mat + n_obj * mult, 0)
    part = np.zeros_like(obj)
    for (owner, nums), scores in zip(owners, part_list):
        local = scores.argmax(1)
        for b, y, x in zip(*np.nonzero(obj == owner)):
            part[b, y, x] = nums[local[b, y, x]]
    return np.stack([obj, mat, part], 1)


def quad_numpy(obj: np.ndarray, n_obj: int, drop_last_region: bool = True) -> np.ndarray:
    """``[b, H, W]`` objects -> ``[b, 2, H, W]`` quadrant labels, reference semantics."""
    out = np.zeros((obj.shape[0], 2) + obj.shape[1:], np.int64)
    eight = np.ones((3, 3), int)
    for b in range(obj.shape[0]):
        regions = []  # (first raster index, mask)
        for v in np.unique(obj[b]):
            if v == 0:
                continue
            lab, n = scipy.ndimage.label(obj[b] == v, structure=eight)
            for k in range(1, n + 1):
                mask = lab == k
                regions.append((np.flatnonzero(mask)[0], v, mask))
        regions.sort(key=lambda r: r[0])
        if drop_last_region:
            regions = regions[:-1]
        for _, v, mask in regions:
            ys, xs = np.nonzero(mask)
            vmid = (ys.min() + ys.max() + 1) // 2
            hmid = (xs.min() + xs.max() + 1) // 2
            yy, xx = np.nonzero(mask)
            out[b, 0, yy, xx] = np.where(yy < vmid, v + n_obj, v + 3 * n_obj)
            out[b, 1, yy, xx] = np.where(xx < hmid, v + 2 * n_obj, v + 4 * n_obj)
    return out


def torch_upp_scores(enc, dec, labeldata, images01, segsizes, downsample):
    """Reference ``raw_seg_prediction`` in PyTorch: summed softmax scores (NCHW) and the
    per-owner part scores (owners in increasing object index)."""
    x = torch.from_numpy(np.ascontiguousarray(images01.transpose(0, 3, 1, 2)))
    x = torch.flip(x * 255, (1,)) - torch.tensor(UPP_MEAN_BGR)[None, :, None, None]
    grid = (x.shape[2] // downsample, x.shape[3] // downsample)
    objects = labeldata["object"]
    owners = sorted(labeldata["object_part"], key=objects.index)
    sums = {}
    with torch.no_grad():
        for s in segsizes:
            xs = x if tuple(x.shape[2:]) == (s, s) else torch.nn.AdaptiveAvgPool2d((s, s))(x)
            out = dec(enc(xs))
            up = {k: F.interpolate(v, grid, mode="bilinear", align_corners=False)
                  for k, v in out.items()}
            now = {"object": F.softmax(up["object"], 1), "material": F.softmax(up["material"], 1)}
            head = 0
            for o in owners:
                n = len(labeldata["object_part"][o])
                now[o] = F.softmax(up["part"][:, head:head + n], 1)
                head += n
            for k, v in now.items():
                sums[k] = sums[k] + v if k in sums else v
    return {k: v.numpy() for k, v in sums.items()}


def semantic_numbering(labeldata: dict):
    """Reference ``SemanticSegmenter``: labels, per-category channels, channel -> number."""
    number, labels = {"-": 0}, [("-", "-")]
    for lab in labeldata["labels"]:
        if lab.get("internal") or lab["name"] in number:
            continue
        number[lab["name"]] = len(labels)
        labels.append((lab["name"], lab["category"]))
    return labels, number


def semantic_rules_numpy(labeldata: dict, scores: np.ndarray) -> np.ndarray:
    """Scores ``[b, channels, H, W]`` -> ``[b, categories, H, W]`` labels."""
    _, number = semantic_numbering(labeldata)
    labs = labeldata["labels"]
    cat_channels = {c["name"]: [i for i, lab in enumerate(labs) if lab["category"] == c["name"]]
                    for c in labeldata["categories"]}
    winner = {}  # channel index chosen per category
    for cat, chans in cat_channels.items():
        winner[cat] = np.asarray(chans)[scores[:, chans].argmax(1)]
    out = []
    for c in labeldata["categories"]:
        win = winner[c["name"]]
        lab = np.vectorize(lambda ch: number.get(labs[ch]["name"], 0))(win)
        if c.get("mask"):
            mask_cat = [k for k, ch in cat_channels.items()
                        if any(labs[i]["name"] == c["mask"] for i in ch)][-1]
            mask_names = np.vectorize(lambda ch: labs[ch]["name"])(winner[mask_cat])
            lab = np.where(mask_names == c["mask"], lab, 0)
        out.append(lab)
    return np.stack(out, 1)


def torch_semantic_scores(enc, dec, labeldata, images01, downsample):
    """Reference ``SemanticSegmenter.raw_seg_prediction`` in PyTorch (NCHW scores)."""
    fmt = labeldata["imageformat"]
    x = torch.from_numpy(np.ascontiguousarray(images01.transpose(0, 3, 1, 2)))
    if fmt["byteorder"] == "BGR":
        x = torch.flip(x, (1,))
    x = (x - torch.tensor(fmt["mean"])[None, :, None, None]) / torch.tensor(
        fmt["stdev"])[None, :, None, None]
    grid = (x.shape[2] // downsample, x.shape[3] // downsample)
    total = 0
    with torch.no_grad():
        for s in labeldata.get("segsizes", [256]):
            xs = x if tuple(x.shape[2:]) == (s, s) else torch.nn.AdaptiveAvgPool2d((s, s))(x)
            raw = F.softmax(F.interpolate(dec(enc(xs)), grid, mode="bilinear",
                                          align_corners=False), 1)
            sm = torch.zeros_like(raw)
            for c in labeldata["categories"]:
                idx = [i for i, lab in enumerate(labeldata["labels"])
                       if lab["category"] == c["name"]]
                sm[:, idx] = F.softmax(raw[:, idx], 1)
            total = total + sm
    return total.numpy()
