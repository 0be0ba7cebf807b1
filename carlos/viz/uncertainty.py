"""The error-bar figure of a LoRA's characterizations: Strength and Consistency with their 95 %
intervals beside the thresholds in force (pure function from a frame to a Plotly figure)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from carlos.config import Thresholds
from carlos.core.risk import RISK_COLOURS
from carlos.core.untrusted import plotly_literal
from carlos.errors import InvalidInputError

#: Columns :func:`interval_figure` reads (``characterize.results.representation_intervals``).
NEEDED = ("label", "strength", "strength_lo", "strength_hi", "consistency", "consistency_lo", "consistency_hi")


def interval_figure(rows: pd.DataFrame, thresholds: Thresholds) -> go.Figure:
    """One row per characterization: the stored value as a point, its 95 % interval as a bar
    (the Consistency interval is for the full-protocol value), threshold lines dashed."""
    missing = [c for c in NEEDED if c not in rows.columns]
    if missing:
        raise InvalidInputError(f"the frame needs columns {missing}")
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=("Strength (95%)", "Consistency (95%)"), horizontal_spacing=0.06)
    labels = rows["label"].astype(str).map(plotly_literal)
    for col, (name, fmt) in enumerate((("strength", ".3f"), ("consistency", ".4f")), start=1):
        value, lo, hi = rows[name].astype(float), rows[f"{name}_lo"].astype(float), rows[f"{name}_hi"].astype(float)
        fig.add_trace(
            go.Scatter(
                x=value,
                y=labels,
                mode="markers",
                name=name,
                showlegend=False,
                marker={"size": 9, "color": "#1f77b4"},
                error_x={"type": "data", "symmetric": False, "array": (hi - value).clip(lower=0), "arrayminus": (value - lo).clip(lower=0)},
                customdata=list(zip(lo, hi)),
                hovertemplate=f"%{{y}}<br>{name} %{{x:{fmt}}} (95%: %{{customdata[0]:{fmt}}}–%{{customdata[1]:{fmt}}})<extra></extra>",
            ),
            row=1,
            col=col,
        )
    if thresholds.strength_max is not None:
        fig.add_vline(x=thresholds.strength_max, line_dash="dash", line_color=RISK_COLOURS["too strong"], row=1, col=1)
    if thresholds.consistency_min is not None:
        fig.add_vline(x=thresholds.consistency_min, line_dash="dash", line_color=RISK_COLOURS["too unstable"], row=1, col=2)
    fig.update_layout(height=120 + 40 * len(rows), margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig
