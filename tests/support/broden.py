"""A small data set in Broden's layout, written by the tests: six labelled images
and one unlabelled row (dropped), every category (colour, object, two-layer parts,
material as per-pixel PNGs; scene and texture as image-level label numbers), a
label numbered above 255 (so the PNG's green channel matters) and labels listed
in two categories (primary by coverage, ties to the later category)."""

import csv
import os

import numpy as np
from PIL import Image

CATEGORIES = ("color", "object", "part", "material", "scene", "texture")
#: number, name, {category: coverage}
LABELS = [(1, "black-c", {"color": 3.0}), (2, "red-c", {"color": 2.0}),
          (3, "dog", {"object": 1.5}), (4, "wood", {"material": 0.9, "object": 0.2}),
          (5, "leg", {"part": 0.3}), (6, "head", {"part": 0.4}),
          (7, "kitchen-s", {"scene": 2.0}), (8, "bedroom-s", {"scene": 1.0}),
          (9, "dotted-t", {"texture": 1.0}), (10, "striped-t", {"texture": 1.0}),
          (11, "floor", {"object": 0.5, "material": 0.5}), (300, "sofa", {"object": 0.5})]
#: each label's primary category as NetDissect picks it
PRIMARY = {1: "color", 2: "color", 3: "object", 4: "material", 5: "part", 6: "part",
           7: "scene", 8: "scene", 9: "texture", 10: "texture", 11: "material",
           300: "object"}
#: layers per category: the most entries any image has there
SLOTS = {"color": 1, "object": 1, "part": 2, "material": 1, "scene": 2, "texture": 2}
SIZE, SEG = 16, 8


def _write_csv(path, fields, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        w.writerows(rows)


def _png(path, labels, rng):
    rgb = np.stack([labels % 256, labels // 256, rng.integers(0, 256, labels.shape)], -1)
    Image.fromarray(rgb.astype(np.uint8)).save(path)


def write_broden(root, seed=0):
    """Writes the data set under ``root``; returns ``(images uint8 [6, 16, 16, 3],
    seg int32 [6, 9, 8, 8], splits)`` as a Broden reader should decode them."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images", "src"))
    n = 6
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    maps = {  # category -> {image: [label map or image-level number, ...]}
        "color": {i: [rng.choice([0, 1, 2], (SEG, SEG))] for i in range(n)},
        "object": {i: [rng.choice([0, 3, 300, 11], (SEG, SEG))] for i in (0, 1, 2, 3, 5)},
        "part": {0: [rng.choice([0, 5], (SEG, SEG)), rng.choice([0, 6], (SEG, SEG))],
                 1: [rng.choice([0, 0, 5], (SEG, SEG)), rng.choice([0, 6, 5], (SEG, SEG))],
                 2: [rng.choice([0, 6], (SEG, SEG))]},
        "material": {i: [rng.choice([0, 4, 11], (SEG, SEG))] for i in (1, 3)},
        "scene": {0: [7], 1: [8, 7], 2: [8], 3: [8]},
        "texture": {4: [9, 10], 5: [10]},
    }
    seg = np.zeros((n, sum(SLOTS.values()), SEG, SEG), np.int32)
    rows, splits = [], []
    for i in range(n):
        name = f"src/img{i}.png"
        Image.fromarray(images[i]).save(os.path.join(root, "images", name))
        cells, layer = [], 0
        for cat in CATEGORIES:
            entries = []
            for j, m in enumerate(maps[cat].get(i, [])):
                seg[i, layer + j] = m
                if np.ndim(m):
                    entries.append(f"src/img{i}_{cat}_{j}.png")
                    _png(os.path.join(root, "images", entries[-1]), np.asarray(m), rng)
                else:
                    entries.append(str(m))
            cells.append(";".join(entries))
            layer += SLOTS[cat]
        splits.append("train" if i % 2 else "val")
        rows.append([name, splits[-1], SIZE, SIZE, SEG, SEG] + cells)
    Image.fromarray(images[0]).save(os.path.join(root, "images", "src", "blank.png"))
    rows.append(["src/blank.png", "val", SIZE, SIZE, SEG, SEG] + [""] * 6)  # dropped
    # columns in another order than category.csv: read by name
    fields = ["image", "split", "ih", "iw", "sh", "sw"] + list(CATEGORIES)
    order = list(range(6)) + [6 + CATEGORIES.index(c) for c in reversed(CATEGORIES)]
    _write_csv(os.path.join(root, "index.csv"), [fields[k] for k in order],
               [[r[k] for k in order] for r in rows])
    _write_csv(os.path.join(root, "category.csv"), ["name", "first", "last", "count",
                                                    "frequency"],
               [[c, 0, 0, 0, 0] for c in CATEGORIES])
    _write_csv(os.path.join(root, "label.csv"),
               ["number", "name", "category", "frequency", "coverage", "syns"],
               [[num, name, ";".join(f"{c}(1)" for c in cov), 1, sum(cov.values()), ""]
                for num, name, cov in LABELS])
    for cat in CATEGORIES:
        listed = [(num, name, cov[cat]) for num, name, cov in LABELS if cat in cov]
        _write_csv(os.path.join(root, f"c_{cat}.csv"),
                   ["code", "number", "name", "frequency", "coverage"],
                   [[k + 1, num, name, 1, c] for k, (num, name, c) in enumerate(listed)])
    return images, seg, splits
