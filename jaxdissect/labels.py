"""Concept vocabularies: label names, their categories, and merging.

Label 0 is always the empty label ``"-"`` ("no concept here"). A segmentation is
an integer array ``[batch, K, H, W]``: K labels per pixel (for example object,
part, material, colour), 0 meaning none, values indexing ``LabelSet.names``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class LabelSet:
    """``names[i]`` and ``categories[i]`` describe label ``i``; ``names[0] == "-"``."""

    names: tuple[str, ...]
    categories: tuple[str, ...]

    def __post_init__(self):
        if len(self.names) != len(self.categories):
            raise ValueError(
                f"LabelSet: {len(self.names)} names but {len(self.categories)} categories")
        if not self.names or self.names[0] != "-":
            raise ValueError("LabelSet: label 0 must be the empty label '-'")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def category_names(self) -> tuple[str, ...]:
        """Distinct categories in order of first appearance (excluding label 0's)."""
        seen: dict[str, None] = {}
        for c in self.categories[1:]:
            seen.setdefault(c, None)
        return tuple(seen)

    @property
    def category_ids(self) -> tuple[int, ...]:
        """``[L]``: each label's index in ``category_names`` (-1 for label 0)."""
        order = {c: i for i, c in enumerate(self.category_names)}
        return (-1,) + tuple(order[c] for c in self.categories[1:])

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no label named {name!r}") from None

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[str, str]]) -> "LabelSet":
        """Build from ``[(name, category), ...]`` for labels 1..L."""
        return cls(("-",) + tuple(n for n, _ in pairs), ("",) + tuple(c for _, c in pairs))

    def to_json(self) -> dict:
        return {"names": list(self.names), "categories": list(self.categories)}

    @classmethod
    def from_json(cls, d: dict) -> "LabelSet":
        return cls(tuple(d["names"]), tuple(d["categories"]))
