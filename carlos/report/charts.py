"""Inline SVG charts of a case file, drawn from its data alone (no Plotly, no browser, no request).

Plotly's static export needs kaleido and a browser; a case file needs two small charts that
render the same in the HTML, in WeasyPrint's PDF and in any viewer, so they are written here as
SVG text: the per-category Strength bars of a local characterization and where a value sits in
its space's distribution (histogram, the value, the threshold). Every label is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

BAR = "#3b6ea8"
MARK = "#c0392b"
MUTED = "#b8c2cc"
INK = "#222"


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".") if math.isfinite(x) else "0"


def _text(x: float, y: float, label: str, *, anchor: str = "start", size: int = 11, fill: str = INK) -> str:
    return f'<text x="{_num(x)}" y="{_num(y)}" font-size="{size}" text-anchor="{anchor}" fill="{fill}">{escape(label)}</text>'


def category_bars(rows: Sequence[Mapping[str, Any]], overall: float | None, *, width: int = 620) -> str:
    """Horizontal bars, one per category (``category``, ``strength``, ``pairs``), with the
    overall Strength as a dashed line; an empty string when there are no rows."""
    if not rows:
        return ""
    label_w, value_w, row_h, top = 190, 120, 22, 26
    plot_w = width - label_w - value_w
    vmax = max([float(r["strength"]) for r in rows] + ([overall] if overall is not None else []))
    vmax = vmax if vmax > 0 and math.isfinite(vmax) else 1.0
    height = top + row_h * len(rows) + 28
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'role="img" aria-label="Strength per prompt category">',
        _text(label_w, 14, "Strength (mean CLIP-difference norm) per prompt category", size=11),
    ]
    for i, r in enumerate(rows):
        y = top + i * row_h
        w = plot_w * float(r["strength"]) / vmax
        parts.append(_text(label_w - 6, y + 14, str(r["category"])[:32], anchor="end"))
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{_num(w)}" height="{row_h - 7}" fill="{BAR}"/>')
        parts.append(_text(label_w + w + 4, y + 14, f"{float(r['strength']):.2f} ({int(r['pairs'])} pairs)", size=10))
    axis_y = top + row_h * len(rows) + 2
    parts.append(f'<line x1="{label_w}" y1="{axis_y}" x2="{label_w + plot_w}" y2="{axis_y}" stroke="{INK}" stroke-width="0.6"/>')
    parts.append(_text(label_w, axis_y + 14, "0", size=10))
    parts.append(_text(label_w + plot_w, axis_y + 14, f"{vmax:.2f}", anchor="end", size=10))
    if overall is not None and math.isfinite(overall):
        x = label_w + plot_w * overall / vmax
        parts.append(f'<line x1="{_num(x)}" y1="{top - 4}" x2="{_num(x)}" y2="{axis_y}" stroke="{MARK}" stroke-dasharray="4 3"/>')
        parts.append(_text(x, axis_y + 24, f"overall {overall:.2f}", anchor="middle", size=10, fill=MARK))
    parts.append("</svg>")
    return "".join(parts)


def distribution_strip(
    dist: Mapping[str, Any] | None, value: float, *, label: str, threshold: float | None = None, width: int = 300
) -> str:
    """A histogram of the space (``edges``, ``counts``) with this LoRA's value marked in red and
    the threshold in force dashed; an empty string without a distribution."""
    if not dist or not dist.get("counts"):
        return ""
    edges, counts = [float(e) for e in dist["edges"]], [int(c) for c in dist["counts"]]
    lo, hi = edges[0], edges[-1]
    span = hi - lo if hi > lo else 1.0
    height, base, plot_h, pad = 104, 74, 44, 8
    plot_w = width - 2 * pad
    cmax = max(counts) or 1

    def x_of(v: float) -> float:
        return pad + plot_w * (min(max(v, lo), hi) - lo) / span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label)} in its space">',
        _text(pad, 12, label, size=11),
    ]
    for i, c in enumerate(counts):
        x0, x1 = x_of(edges[i]), x_of(edges[i + 1])
        h = plot_h * c / cmax
        parts.append(
            f'<rect x="{_num(x0)}" y="{_num(base - h)}" width="{_num(max(x1 - x0 - 0.5, 0.5))}" height="{_num(h)}" fill="{MUTED}"/>'
        )
    parts.append(f'<line x1="{pad}" y1="{base}" x2="{pad + plot_w}" y2="{base}" stroke="{INK}" stroke-width="0.6"/>')
    parts.append(_text(pad, base + 12, f"{lo:.3g}", size=9))
    parts.append(_text(pad + plot_w, base + 12, f"{hi:.3g}", anchor="end", size=9))
    if threshold is not None and lo <= threshold <= hi:
        tx = x_of(threshold)
        parts.append(f'<line x1="{_num(tx)}" y1="{base - plot_h}" x2="{_num(tx)}" y2="{base}" stroke="{INK}" stroke-dasharray="3 3"/>')
        parts.append(_text(min(max(tx, pad + 40), pad + plot_w - 40), base + 24, f"threshold {threshold:g}", anchor="middle", size=9))
    if math.isfinite(value):
        vx = x_of(value)
        parts.append(f'<line x1="{_num(vx)}" y1="{base - plot_h - 2}" x2="{_num(vx)}" y2="{base + 2}" stroke="{MARK}" stroke-width="2"/>')
        parts.append(
            _text(min(max(vx, pad + 12), pad + plot_w - 12), base - plot_h - 4, f"{value:.3g}", anchor="middle", size=9, fill=MARK)
        )
    parts.append("</svg>")
    return "".join(parts)
