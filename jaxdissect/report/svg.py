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


def _ticks(top: int, most: int = 5) -> list[int]:
    """Whole-number axis ticks 0..``top`` at the first 1-2-5 step giving at most
    ``most`` intervals."""
    step = next(m * 10 ** e for e in range(12) for m in (1, 2, 5) if top / (m * 10 ** e) <= most)
    return list(range(0, top + 1, step))


def concept_bargraph(labelled: Sequence[tuple[str, str]], bar_width: int = 14,
                     title: str | None = None, font_size: int = 11) -> str:
    """A standalone SVG document charting units per concept (``labelled`` holds one
    ``(concept, category)`` pair per labelled unit).

    The drawing grows with the data: one bar slot of ``max(bar_width + 4, font_size +
    5)`` pixels per concept (labels are vertical, so neighbours never overlap), a plot
    as tall as the largest count needs (10 px a unit, 120 to 260 px), room below for
    the longest label; a title, a y axis in units with gridlines, and a legend of
    categories."""
    bars, cats = concept_counts(labelled)
    pitch = max(bar_width + 4, font_size + 5)
    bar_width = min(bar_width, pitch - 4)
    top_count = max((n for _, _, n in bars), default=1)
    plot_h = min(260, max(120, 10 * top_count))
    char_w = 0.62 * font_size                     # sans-serif average advance
    label_h = 8 + char_w * max((len(name) for name, _, _ in bars), default=4)
    legend_w = 24 + char_w * max((len(f"{n} {c}s") for c, n in cats), default=8)
    left, top = 46, 34 if title else 12
    bars_w = max(1, len(bars)) * pitch
    title_w = left + 0.6 * 13 * len(title or "")
    width = max(left + bars_w + 16 + legend_w, title_w) + 8
    height = top + plot_h + label_h + 18
    svg = ET.Element("svg", xmlns="http://www.w3.org/2000/svg", version="1.1",
                     width=f"{width:.0f}", height=f"{height:.0f}",
                     viewBox=f"0 0 {width:.0f} {height:.0f}")
    svg.set("class", "concept-bargraph")
    font = "font-family:sans-serif;font-size:%dpx"
    ET.SubElement(svg, "rect", x="0", y="0", width=f"{width:.0f}", height=f"{height:.0f}",
                  fill="#ffffff")
    if title:
        t = ET.SubElement(svg, "text", x=str(left), y="18", style=font % 13 +
                          ";font-weight:bold")
        t.text = title
    unit_h = plot_h / top_count
    base_y = top + plot_h
    x = float(left)
    colour = {}
    for i, (cat, n) in enumerate(cats):                 # category bands and legend
        colour[cat] = PALETTE[i % len(PALETTE)]
        ET.SubElement(svg, "rect", x=f"{x:.1f}", y=f"{top:.1f}", width=f"{pitch * n:.1f}",
                      height=f"{plot_h:.1f}", fill=colour[cat][1])
        ly = top + 4 + 16 * i
        ET.SubElement(svg, "rect", x=f"{left + bars_w + 16:.1f}", y=f"{ly:.1f}", width="10",
                      height="10", fill=colour[cat][0])
        label = ET.SubElement(svg, "text", x=f"{left + bars_w + 30:.1f}", y=f"{ly + 9:.1f}",
                              style=font % font_size)
        label.text = f"{n} {cat}{'s' if n != 1 else ''}"
        x += pitch * n
    for v in _ticks(top_count):                         # y axis: units, with gridlines
        y = base_y - v * unit_h
        ET.SubElement(svg, "line", x1=str(left - 3), x2=f"{left + bars_w:.1f}", y1=f"{y:.1f}",
                      y2=f"{y:.1f}", stroke="#ffffff" if v else "#444444",
                      **{"stroke-width": "1"})
        t = ET.SubElement(svg, "text", x=str(left - 6), y=f"{y + 4:.1f}",
                          style=font % 10 + ";text-anchor:end")
        t.text = str(v)
    t = ET.SubElement(svg, "text", x="12", y=f"{base_y - plot_h / 2:.1f}",
                      style=font % 11 + ";text-anchor:middle",
                      transform=f"rotate(-90 12 {base_y - plot_h / 2:.1f})")
    t.text = "labelled units (count)"
    x = float(left)
    for name, cat, n in bars:
        r = ET.SubElement(svg, "rect", x=f"{x + (pitch - bar_width) / 2:.1f}",
                          y=f"{base_y - n * unit_h:.1f}", width=str(bar_width),
                          height=f"{n * unit_h:.1f}", fill=colour[cat][0])
        r.set("data-concept", name)
        r.set("data-count", str(n))
        ET.SubElement(r, "title").text = f"{name} ({cat}): {n} unit{'s' if n != 1 else ''}"
        lx, ly = x + pitch / 2 + font_size * 0.35, base_y + 5
        t = ET.SubElement(svg, "text", x=f"{lx:.1f}", y=f"{ly:.1f}",
                          style=font % font_size + ";text-anchor:end",
                          transform=f"rotate(-90 {lx:.1f} {ly:.1f})")
        t.text = name
        x += pitch
    t = ET.SubElement(svg, "text", x=f"{left + bars_w / 2:.1f}", y=f"{height - 4:.1f}",
                      style=font % 11 + ";text-anchor:middle")
    t.text = "concept (bands: category)"
    return ET.tostring(svg, encoding="unicode")
