"""The ``labels.json`` files that come with the reference's segmenter weights.

Two formats, as the reference's ``netdissect/segmenter.py`` reads them.

Unified parsing (``upp-resnet50-upernet/labels.json``)::

    {"object":   ["-", "wall", "building", ...],     # index 0 is "no object"
     "material": ["-", "brick", ...],                # index 0 is "no material"
     "scene":    ["airport", ...],
     "part":     ["arm", "back", ...],
     "object_part": {"building": ["door", "window", ...], "person": [...], ...}}

The part head's channels are grouped by owning object in increasing object
index; within a group, in the order of that object's ``object_part`` list.

Semantic segmenters such as the colour model (``color-.../labels.json``)::

    {"labels": [{"name": "-", "category": "color"},
                {"name": "black", "category": "color"}, ...],  # one per output channel;
                                                                # optional "internal": true
     "categories": [{"name": "color"}, ...],   # optional "mask": a label name
     "imageformat": {"byteorder": "RGB", "mean": [...], "stdev": [...]},
     "segsizes": [256]}                          # optional
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping


def read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"labels file not found: {path}")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None


@dataclasses.dataclass(frozen=True)
class UnifiedLabelData:
    """Vocabulary of the unified-parsing network (see module docstring)."""

    object: tuple[str, ...]
    material: tuple[str, ...]
    part: tuple[str, ...]
    scene: tuple[str, ...]
    object_part: tuple[tuple[str, tuple[str, ...]], ...]  # in the file's key order

    @classmethod
    def from_json(cls, d: Mapping, where: str = "labels.json") -> "UnifiedLabelData":
        missing = [k for k in ("object", "material", "object_part") if k not in d]
        if missing:
            raise ValueError(f"{where}: not a unified-parsing labels file, no keys {missing}")
        objects = tuple(d["object"])
        if not isinstance(d["object_part"], Mapping):
            raise ValueError(f"{where}: 'object_part' must map object names to part lists")
        unknown = [o for o in d["object_part"] if o not in objects]
        if unknown:
            raise ValueError(f"{where}: object_part names objects not in 'object': {unknown}")
        return cls(object=objects, material=tuple(d["material"]), part=tuple(d.get("part", ())),
                   scene=tuple(d.get("scene", ())),
                   object_part=tuple((o, tuple(p)) for o, p in d["object_part"].items()))

    @classmethod
    def read(cls, path: str) -> "UnifiedLabelData":
        return cls.from_json(read_json(path), path)

    @property
    def part_blocks(self) -> tuple[tuple[str, int, int], ...]:
        """``(object, start, stop)`` channel ranges of the part head, in head order."""
        order = sorted(self.object_part, key=lambda op: self.object.index(op[0]))
        blocks, start = [], 0
        for obj, parts in order:
            blocks.append((obj, start, start + len(parts)))
            start += len(parts)
        return tuple(blocks)

    @property
    def num_part_channels(self) -> int:
        return sum(len(p) for _, p in self.object_part)


@dataclasses.dataclass(frozen=True)
class SemanticLabelData:
    """Vocabulary and input format of a semantic segmenter (see module docstring)."""

    labels: tuple[tuple[str, str, bool], ...]  # (name, category, internal) per channel
    categories: tuple[tuple[str, str | None], ...]  # (name, mask label or None)
    bgr: bool
    mean: tuple[float, float, float]
    stdev: tuple[float, float, float]
    segsizes: tuple[int, ...] = (256,)

    @classmethod
    def from_json(cls, d: Mapping, where: str = "labels.json") -> "SemanticLabelData":
        missing = [k for k in ("labels", "categories", "imageformat") if k not in d]
        if missing:
            raise ValueError(f"{where}: not a semantic-segmenter labels file, no keys {missing}")
        labels = tuple((lab["name"], lab["category"], bool(lab.get("internal", False)))
                       for lab in d["labels"])
        cats = tuple((c["name"], c.get("mask")) for c in d["categories"])
        catnames = [c for c, _ in cats]
        stray = sorted({c for _, c, _ in labels} - set(catnames))
        if stray:
            raise ValueError(f"{where}: labels use categories not listed in 'categories': {stray}")
        names = [n for n, _, _ in labels]
        bad_masks = [m for _, m in cats if m is not None and m not in names]
        if bad_masks:
            raise ValueError(f"{where}: category masks name unknown labels {bad_masks}")
        fmt = d["imageformat"]
        byteorder = fmt.get("byteorder", "RGB")
        if byteorder not in ("RGB", "BGR"):
            raise ValueError(
                f"{where}: imageformat.byteorder must be RGB or BGR, not {byteorder!r}")
        return cls(labels=labels, categories=cats, bgr=byteorder == "BGR",
                   mean=tuple(float(v) for v in fmt["mean"]),
                   stdev=tuple(float(v) for v in fmt["stdev"]),
                   segsizes=tuple(int(s) for s in d.get("segsizes", (256,))))

    @classmethod
    def read(cls, path: str) -> "SemanticLabelData":
        return cls.from_json(read_json(path), path)
