"""The map's extra layers as Plotly pieces: density cells, region labels and markers, the outline
of the selected region, and the risk mix of every region as a stacked bar.

Region labels are creator words (the members' names and descriptions): every label goes through
:func:`carlos.core.untrusted.plotly_literal`, since Plotly reads ``<b>``, ``<a href>``, ``<br>``
and entities in annotation, hover and tick text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from carlos.core.risk import RISK_COLOURS
from carlos.core.untrusted import plotly_literal
from carlos.viz.mapview import REGION_PREFIX, Density, PlacedLabel

LABEL_FONT = {"size": 12, "color": "#1a1a1a"}
#: Hover of the points of a large WebGL map: the name, and the trace (colour class) as the extra.
LEAN_HOVER = "<b>%{customdata[1]}</b><extra>%{fullData.name}</extra>"
SELECTED_BORDER = "#d62728"


def lean_customdata(df: pd.DataFrame) -> np.ndarray:
    """(n, 2) object array: lora_id, escaped name; what each point of a large WebGL map carries
    (a third of the bytes of the full hover)."""
    out = np.empty((len(df), 2), dtype=object)
    out[:, 0] = df["lora_id"].astype(str).to_numpy()
    out[:, 1] = df["name"].map(plotly_literal).to_numpy()
    return out


def add_density(fig: go.Figure, density: Density) -> None:
    """Counts per cell as a heatmap under the points (log scale, empty cells transparent)."""
    counts = density.counts.astype(np.float64)
    z = np.where(counts > 0, np.log10(np.maximum(counts, 1)) + 1, np.nan)
    fig.add_trace(
        go.Heatmap(
            x=density.x,
            y=density.y,
            z=z,
            customdata=density.counts,
            colorscale="Blues",
            showscale=False,
            hovertemplate="%{customdata} LoRAs in this cell<extra></extra>",
            name="density",
            zsmooth=False,
        )
    )


def add_region_labels(fig: go.Figure, labels: Sequence[PlacedLabel], selected: int | None = None) -> None:
    """Each placed label as an annotation (a short leader line to its centroid), and the centroids
    as one marker trace: hovering names the region, clicking one selects it (Streamlit turns a click
    into a selection in pan or zoom mode; in box/lasso mode a click does nothing).

    The annotations are set in one assignment: ``add_annotation`` one at a time re-validates every
    earlier one (quadratic): 103 ms against 5.5 ms for 27 regions on a 2-core VM, the map page's largest cost."""
    notes = []
    for lab in labels:
        chosen = lab.cluster_id == selected
        notes.append(
            dict(
                x=lab.x,
                y=lab.y,
                ax=lab.ax,
                ay=lab.ay,
                text=plotly_literal(lab.label),
                showarrow=True,
                arrowhead=0,
                arrowwidth=1,
                arrowcolor="#555",
                standoff=4,
                font={**LABEL_FONT, "size": 13 if chosen else 12},
                bgcolor="rgba(255,255,255,0.82)",
                bordercolor=SELECTED_BORDER if chosen else "#777",
                borderwidth=2 if chosen else 1,
                borderpad=2,
                name=f"region {lab.cluster_id}",
            )
        )
    if notes:
        fig.update_layout(annotations=[*fig.layout.annotations, *notes])
    if labels:
        fig.add_trace(
            go.Scatter(
                x=[lab.x for lab in labels],
                y=[lab.y for lab in labels],
                mode="markers",
                name="region centres",
                marker={"size": 10, "color": "rgba(255,255,255,0.9)", "line": {"width": 1.5, "color": "#333"}, "symbol": "circle"},
                customdata=[[f"{REGION_PREFIX}{lab.cluster_id}", plotly_literal(lab.label), lab.size] for lab in labels],
                hovertemplate="<b>%{customdata[1]}</b><br>%{customdata[2]} LoRAs · select it: its bar below, or a click here in pan mode"
                "<extra></extra>",
            )
        )


def add_outline(fig: go.Figure, polygon: np.ndarray | None, name: str = "selected region") -> None:
    """The selected region's convex hull as a dashed line (not selectable)."""
    if polygon is None or len(polygon) < 3:
        return
    path = "M " + " L ".join(f"{x:.6g},{y:.6g}" for x, y in polygon) + " Z"
    fig.add_shape(type="path", path=path, line={"color": SELECTED_BORDER, "width": 2, "dash": "dot"}, layer="above", name=name)


def risk_mix_bar(table: pd.DataFrame, risk_classes: Sequence[str], selected: int | None = None) -> go.Figure:
    """One stacked horizontal bar per region (rows of :func:`carlos.viz.mapview.region_table`):
    its LoRAs by risk class; clicking a bar selects the region."""
    df = table.iloc[::-1]  # largest region on top
    rows = list(range(len(df)))  # positions, not label text: two regions may share a label
    ticks = [("▶ " if c == selected else "") + plotly_literal(r) for c, r in zip(df["cluster_id"], df["region"])]
    fig = go.Figure()
    for k in risk_classes:
        if k not in df or not df[k].any():
            continue
        fig.add_trace(
            go.Bar(
                x=df[k],
                y=rows,
                text=ticks,
                orientation="h",
                name=k,
                marker_color=RISK_COLOURS.get(k, "#7f7f7f"),
                customdata=[[f"{REGION_PREFIX}{c}"] for c in df["cluster_id"]],
                hovertemplate=f"%{{text}}: %{{x}} {k}<extra></extra>",
                textposition="none",
            )
        )
    fig.update_layout(
        barmode="stack",
        height=80 + 20 * len(df),
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        xaxis_title="LoRAs",
        yaxis={"automargin": True, "tickfont": {"size": 11}, "tickvals": rows, "ticktext": ticks},
        dragmode=False,
    )
    return fig
