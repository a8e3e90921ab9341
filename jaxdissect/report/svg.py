"""SVG bar chart of labelled units per concept, grouped by category.

Bars are sorted by category (in the order given) and, within a category, by
count (most units first); each category sits on a pale band with its own colour,
as in the paper's dissection figures. Written with ``xml.etree`` so labels are
escaped.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence
from xml.etree import ElementTree as ET

#: (bar colour, band colour) per category, cycled
PALETTE = (("#4B4CBF", "#B6B6F2"), ("#55B05B", "#B6F2BA"), ("#50BDAC", "#A5E5DB"),
           ("#81C679", "#C0FF9B"), ("#F0883B", "#F2CFB6"), ("#D4CF24", "#F2F1B6"),
           ("#D92E2B", "#F2B6B6"), ("#AB6BC6", "#CFAAFF"))
CATEGORY_ORDER = ("object", "part", "material", "texture", "color", "colour", "scene")


def concept_counts(labelled: Sequence[tuple[str, str]],
                   category_order: Sequence[str] = CATEGORY_ORDER):
    """``[(concept, category), ...]`` one per labelled unit -> ordered
    ``[(concept, category, count)]`` and ``[(category, number of concepts)]``."""
    counts = Counter(labelled)
    order = {c: i for i, c in enumerate(category_order)}
    rows = sorted(counts.items(), key=lambda kv: (order.get(kv[0][1], len(order)), kv[0][1],
                                                  -kv[1], kv[0][0]))
    bars = [(name, cat, n) for (name, cat), n in rows]
    cats: list[tuple[str, int]] = []
    for _, cat, _ in bars:
        if cats and cats[-1][0] == cat:
            cats[-1] = (cat, cats[-1][1] + 1)
        else:
            cats.append((cat, 1))
    return bars, cats


def concept_bargraph(labelled: Sequence[tuple[str, str]], bar_height: int = 100,
                     bar_width: int = 12, title: str | None = None) -> str:
    """A standalone SVG document charting units per concept (``labelled`` holds one
    ``(concept, category)`` pair per labelled unit)."""
    bars, cats = concept_counts(labelled)
    gap = bar_width / 4
    text_h = bar_height  # room for 45-degree labels
    left, top, legend_w = 40, 28 if title else 8, 120
    bars_w = max(1, len(bars)) * (bar_width + gap)
    width = max(left + bars_w + legend_w, 7 * len(title or "") + left)
    height = top + bar_height + text_h
    svg = ET.Element("svg", xmlns="http://www.w3.org/2000/svg", version="1.1",
                     width=f"{width:.0f}", height=f"{height:.0f}",
                     viewBox=f"0 0 {width:.0f} {height:.0f}")
    svg.set("class", "concept-bargraph")
    font = "font-family:sans-serif;font-size:%dpx"
    if title:
        t = ET.SubElement(svg, "text", x=str(left), y="14", style=font % 13)
        t.text = title
    top_count = max((n for _, _, n in bars), default=1)
    unit_h = bar_height / top_count
    base_y = top + bar_height
    # axis ticks
    for v in sorted({1, (top_count + 1) // 2, top_count}):
        t = ET.SubElement(svg, "text", x=str(left - 4), y=f"{base_y - v * unit_h + 4:.1f}",
                          style=font % 10 + ";text-anchor:end")
        t.text = str(v)
    t = ET.SubElement(svg, "text", x="10", y=f"{base_y - bar_height / 2:.1f}",
                      style=font % 10 + ";text-anchor:middle",
                      transform=f"rotate(-90 10 {base_y - bar_height / 2:.1f})")
    t.text = "units"
    x = float(left)
    colour = {}
    for i, (cat, n) in enumerate(cats):
        colour[cat] = PALETTE[i % len(PALETTE)]
        w = (bar_width + gap) * n - gap
        ET.SubElement(svg, "rect", x=f"{x:.1f}", y=f"{top:.1f}", width=f"{w:.1f}",
                      height=f"{bar_height:.1f}", fill=colour[cat][1])
        # legend to the right of the bars: one swatch and count per category
        ly = top + 4 + 16 * i
        ET.SubElement(svg, "rect", x=f"{left + bars_w + 10:.1f}", y=f"{ly:.1f}", width="10",
                      height="10", fill=colour[cat][0])
        label = ET.SubElement(svg, "text", x=f"{left + bars_w + 24:.1f}", y=f"{ly + 9:.1f}",
                              style=font % 11)
        label.text = f"{n} {cat}{'s' if n != 1 else ''}"
        x += (bar_width + gap) * n
    x = float(left)
    for name, cat, n in bars:
        r = ET.SubElement(svg, "rect", x=f"{x:.1f}", y=f"{base_y - n * unit_h:.1f}",
                          width=str(bar_width), height=f"{n * unit_h:.1f}", fill=colour[cat][0])
        r.set("data-concept", name)
        r.set("data-count", str(n))
        ET.SubElement(r, "title").text = f"{name} ({cat}): {n} unit{'s' if n != 1 else ''}"
        lx, ly = x + bar_width, base_y + 6
        t = ET.SubElement(svg, "text", x=f"{lx:.1f}", y=f"{ly:.1f}",
                          style=font % bar_width + ";text-anchor:end",
                          transform=f"rotate(-45 {lx:.1f} {ly:.1f})")
        t.text = name
        x += bar_width + gap
    return ET.tostring(svg, encoding="unicode")
