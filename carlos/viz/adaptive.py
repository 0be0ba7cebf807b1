"""The live chart of an adaptive characterization: the Strength and Consistency intervals
narrowing round by round, beside the thresholds in force (a pure function from the rounds
frame of :func:`carlos.characterize.results.adaptive_progress` to a Plotly figure)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from carlos.config import Thresholds
from carlos.core.risk import RISK_COLOURS
from carlos.errors import InvalidInputError

#: Columns :func:`narrowing_figure` reads.
NEEDED = ("n", "strength", "strength_lo", "strength_hi", "consistency", "consistency_lo", "consistency_hi")
BAND = "rgba(31, 119, 180, 0.2)"


def narrowing_figure(rounds: pd.DataFrame, thresholds: Thresholds) -> go.Figure:
    """One point per round (x: pairs so far): the estimate as a line, the 95 % interval for the
    full protocol's value as a band (what the stopping rule reads), threshold lines dashed.
    Rounds without an interval yet (too few prompts) leave a gap in the band."""
    missing = [c for c in NEEDED if c not in rounds.columns]
    if missing:
        raise InvalidInputError(f"the frame needs columns {missing}")
    titles = ("Strength (95% for the full protocol)", "Consistency (95% for the full protocol)")
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.1)
    n = rounds["n"].astype(int).tolist()
    for col, (name, fmt) in enumerate((("strength", ".3f"), ("consistency", ".4f")), start=1):
        value = pd.to_numeric(rounds[name], errors="coerce")
        lo = pd.to_numeric(rounds[f"{name}_lo"], errors="coerce")
        hi = pd.to_numeric(rounds[f"{name}_hi"], errors="coerce")
        band = {"mode": "lines", "line": {"width": 0}, "showlegend": False, "hoverinfo": "skip"}
        fig.add_trace(go.Scatter(x=n, y=hi, **band), row=1, col=col)
        fig.add_trace(go.Scatter(x=n, y=lo, fill="tonexty", fillcolor=BAND, **band), row=1, col=col)
        fig.add_trace(
            go.Scatter(
                x=n,
                y=value,
                mode="lines+markers",
                name=name,
                showlegend=False,
                marker={"size": 7, "color": "#1f77b4"},
                customdata=list(zip(lo, hi)),
                hovertemplate=f"%{{x}} pairs: %{{y:{fmt}}} (95%: %{{customdata[0]:{fmt}}}–%{{customdata[1]:{fmt}}})<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="pairs", row=1, col=col)
    if thresholds.strength_max is not None:
        fig.add_hline(y=thresholds.strength_max, line_dash="dash", line_color=RISK_COLOURS["too strong"], row=1, col=1)
    if thresholds.consistency_min is not None:
        fig.add_hline(y=thresholds.consistency_min, line_dash="dash", line_color=RISK_COLOURS["too unstable"], row=1, col=2)
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig
