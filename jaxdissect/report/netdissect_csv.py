"""Dissections as the original NetDissect's per-unit CSV (``tally.csv``), both ways.

The schema NetDissect-Lite's ``FeatureOperator.tally`` writes: one row per unit,
best-scoring unit first, columns

    unit,category,label,score,
    <cat>-label,<cat>-truth,<cat>-activation,<cat>-intersect,<cat>-iou   (per category)

``unit`` numbered from 1; ``label``/``category``/``score`` the unit's best label
over all categories, its category and IoU; per category, the unit's best label of
that category (``<cat>-label``), that label's pixel count (``truth``), the unit's
side of the union (``activation``: its whole area under the PNAS rule, its area
over images where it touches the category under NetDissect's rule), the
intersection (``intersect``, pixels) and the IoU. NetDissect writes the counts as
floats (``1234.0``); both forms read.

``write_csv(result, path)`` writes a ``DissectResult``; ``read_csv(path)`` reads any
such file (ours or a published one) into a ``NetDissectTable``, sorted by unit;
``table_from_result(result)`` is the table ``write_csv`` writes. One difference
from NetDissect: a category in which the unit's IoU is 0 everywhere names the
category's first label (NetDissect names label 0, ``-``); the IoU is 0 either way.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os

import numpy as np

from jaxdissect.runtime.cache import atomic_write

#: per-category columns, after ``unit,category,label,score``
FIELDS = ("label", "truth", "activation", "intersect", "iou")
HEAD = ("unit", "category", "label", "score")


@dataclasses.dataclass(frozen=True)
class CategoryColumns:
    """One category's columns, ``[n]`` each: ``label`` (names), ``truth``,
    ``activation``, ``intersect`` (int64 pixel counts) and ``iou`` (float64)."""

    label: tuple[str, ...]
    truth: np.ndarray
    activation: np.ndarray
    intersect: np.ndarray
    iou: np.ndarray


@dataclasses.dataclass(frozen=True)
class NetDissectTable:
    """``n`` units, sorted by unit: ``unit`` ``[n]`` int64 (0-based: the file's
    number minus 1), ``category``/``label`` ``[n]`` names, ``score`` ``[n]``
    float64, and ``columns[cat]`` for each category in file order."""

    unit: np.ndarray
    category: tuple[str, ...]
    label: tuple[str, ...]
    score: np.ndarray
    columns: dict[str, CategoryColumns]

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def __len__(self) -> int:
        return len(self.unit)

    def rows(self) -> list[dict]:
        """One dict per unit in the CSV's own terms (1-based ``unit``)."""
        out = []
        for i in range(len(self)):
            row = {"unit": int(self.unit[i]) + 1, "category": self.category[i],
                   "label": self.label[i], "score": float(self.score[i])}
            for cat, col in self.columns.items():
                row.update({f"{cat}-label": col.label[i],
                            f"{cat}-truth": int(col.truth[i]),
                            f"{cat}-activation": int(col.activation[i]),
                            f"{cat}-intersect": int(col.intersect[i]),
                            f"{cat}-iou": float(col.iou[i])})
            out.append(row)
        return out


def table_from_result(result, categories=None) -> NetDissectTable:
    """The table of a ``DissectResult``. ``categories``: the column order (default
    ``result.labels.category_names``; Broden's is ``BrodenSource.categories``)."""
    labels = result.labels
    categories = tuple(labels.category_names if categories is None else categories)
    unknown = [c for c in categories if c not in labels.category_names]
    if unknown:
        raise ValueError(f"categories {unknown} are not among the labels' "
                         f"{list(labels.category_names)}")
    units = np.arange(result.num_units)
    side = np.asarray(result.union_unit_area())
    if side.ndim == 1:
        side = np.broadcast_to(side[:, None], result.iou.shape)
    best = result.best_by_category()
    columns = {}
    for cat in categories:
        lab, iou = best[cat]
        columns[cat] = CategoryColumns(
            tuple(labels.names[j] for j in lab), np.asarray(result.label_area)[lab],
            side[units, lab], np.asarray(result.intersections)[units, lab],
            np.asarray(iou, np.float64))
    return NetDissectTable(
        units.astype(np.int64), tuple(labels.categories[j] for j in result.best_label),
        tuple(labels.names[j] for j in result.best_label),
        np.asarray(result.best_iou, np.float64), columns)


def write_csv(result, path: str, categories=None) -> str:
    """Writes ``result`` (a ``DissectResult``) to ``path`` in NetDissect's schema,
    best-scoring unit first (ties by unit), atomically; returns ``path``."""
    table = table_from_result(result, categories)
    header = list(HEAD) + [f"{c}-{f}" for c in table.categories for f in FIELDS]
    order = sorted(range(len(table)), key=lambda i: (-table.score[i], i))
    rows = table.rows()
    text = io.StringIO()
    writer = csv.DictWriter(text, header, lineterminator="\n")
    writer.writeheader()
    for i in order:
        # repr: floats read back to the same bits
        writer.writerow({k: repr(v) if isinstance(v, float) else v
                         for k, v in rows[i].items()})
    return atomic_write(path, lambda f: f.write(text.getvalue()), mode="w")


def _count(value: str, where: str) -> int:
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(x) or x != int(x) or x < 0:
        raise ValueError(f"{where}: {value!r} is not a whole number >= 0")
    return int(x)


def _float(value: str, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not a number") from None


def read_csv(path: str) -> NetDissectTable:
    """A NetDissect ``tally.csv`` (or ``write_csv``'s output) as a table."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"NetDissect CSV {path} does not exist")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or ())
        rows = list(reader)
    missing = [h for h in HEAD if h not in header]
    categories = tuple(dict.fromkeys(h[:-len("-label")] for h in header
                                     if h.endswith("-label")))
    missing += [f"{c}-{f}" for c in categories for f in FIELDS if f"{c}-{f}" not in header]
    if missing:
        raise ValueError(f"{path} is not in NetDissect's schema: no column(s) "
                         f"{', '.join(missing)}")
    if not categories:
        raise ValueError(f"{path} has no <category>-label columns")
    units = []
    for line, row in enumerate(rows, start=2):
        unit = _count(row["unit"], f"{path}:{line} unit")
        if unit < 1:
            raise ValueError(f"{path}:{line}: units are numbered from 1, got {unit}")
        units.append(unit - 1)
    if len(set(units)) != len(units):
        raise ValueError(f"{path}: a unit appears twice")
    order = np.argsort(units, kind="stable")
    rows = [(int(i) + 2, rows[i]) for i in order]

    def column(name, parse):
        return [parse(row[name], f"{path}:{line} {name}") for line, row in rows]

    columns = {}
    for cat in categories:
        columns[cat] = CategoryColumns(
            tuple(row[f"{cat}-label"] for _, row in rows),
            *(np.array(column(f"{cat}-{f}", _count), np.int64)
              for f in ("truth", "activation", "intersect")),
            np.array(column(f"{cat}-iou", _float), np.float64))
    return NetDissectTable(np.array(units, np.int64)[order],
                           tuple(row["category"] for _, row in rows),
                           tuple(row["label"] for _, row in rows),
                           np.array(column("score", _float), np.float64), columns)
