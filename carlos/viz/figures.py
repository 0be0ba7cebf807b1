"""Plotly figure builders: pure functions from frames to figures (no streamlit).

Every point carries its ``lora_id`` as the first ``customdata`` field, so a box or
lasso selection in the dashboard maps back to LoRAs through :func:`selected_ids`
whatever trace (colour group, highlight overlay) the point belongs to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from carlos.config import Thresholds
from carlos.core.risk import NSFW_BITS, RISK_CLASSES, RISK_COLOURS, nsfw_label
from carlos.core.untrusted import plotly_literal
from carlos.errors import InvalidInputError
from carlos.viz import map_layers
from carlos.viz.mapview import Density, PlacedLabel, Viewport

STATUS_COLOURS = {"unreviewed": "#9e9e9e", "approved": "#2ca02c", "flagged": "#d62728", "escalated": "#9467bd"}
NSFW_ORDER = (*NSFW_BITS.values(), "unknown")
NSFW_COLOURS = dict(zip(NSFW_ORDER, ("#2ca02c", "#bcbd22", "#ff7f0e", "#d62728", "#8c564b", "#000000", "#c7c7c7")))
#: Colour choices: label for people → (frame column, kind, category order / colourscale).
COLOUR_BY: dict[str, tuple[str, str, Any]] = {
    "risk class": ("risk_class", "category", RISK_COLOURS),
    "NSFW level": ("nsfw", "category", NSFW_COLOURS),
    "review status": ("status", "category", STATUS_COLOURS),
    "Strength": ("strength", "continuous", "Viridis"),
    "Consistency": ("consistency", "continuous", "Cividis"),
    "search score": ("score", "continuous", "Plasma"),
}
AXES = ("values", "ranks")
REGION_FILL = {"too strong": "rgba(214,39,40,0.08)", "too unstable": "rgba(127,127,127,0.10)", "review": "rgba(255,127,14,0.12)"}
_BASE_SIZE, _HIGHLIGHT_SIZE = 7, 15


def with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the ``nsfw`` label and, where missing, ``status`` = unreviewed."""
    df = frame.copy()
    if "nsfw_level" in df and "nsfw" not in df:
        # nsfw_level is a nullable integer column: pd.NA must read as unknown
        df["nsfw"] = df["nsfw_level"].map(lambda v: nsfw_label(None if pd.isna(v) else v))
    if "status" not in df:
        df["status"] = "unreviewed"
    else:
        df["status"] = df["status"].fillna("unreviewed")
    return df


def add_ranks(frame: pd.DataFrame) -> pd.DataFrame:
    """Strength and Consistency ranks (1 = lowest; ties broken by row order), as in the paper."""
    df = frame.copy()
    df["strength_rank"] = df["strength"].rank(method="first").astype(int)
    df["consistency_rank"] = df["consistency"].rank(method="first").astype(int)
    return df


def rank_position(values: pd.Series, cut: float, *, inclusive: bool) -> float:
    """Where a value cut falls on the rank axis: between the last rank at (or below,
    ``inclusive``) the cut and the next one."""
    below = int((values <= cut).sum()) if inclusive else int((values < cut).sum())
    return below + 0.5


def selected_ids(selection: Mapping[str, Any] | None) -> list[str]:
    """LoRA ids of the points in a Streamlit Plotly selection state, in order, unique."""
    if not selection:
        return []
    out: dict[str, None] = {}
    for p in selection.get("points", []) or []:
        cd = p.get("customdata")
        if isinstance(cd, (list, tuple)) and cd:
            cd = cd[0]
        if isinstance(cd, str) and cd:
            out[cd] = None
    return list(out)


def risk_scatter(
    frame: pd.DataFrame,
    thresholds: Thresholds,
    *,
    axes: str = "values",
    colour: str = "risk class",
    review_cuts: tuple[float, float] | None = None,
    highlight_ids: Iterable[str] = (),
) -> go.Figure:
    """Strength (x) vs Consistency (y), or their ranks, with the threshold lines and the
    regions: too strong, too unstable, review (strong *and* consistent), low risk."""
    if axes not in AXES:
        raise InvalidInputError(f"axes must be one of {AXES}, got {axes!r}")
    _need(frame, ("lora_id", "name", "strength", "consistency"))
    df = add_ranks(with_labels(frame))
    x, y = ("strength", "consistency") if axes == "values" else ("strength_rank", "consistency_rank")
    fig = go.Figure()
    _add_points(fig, df, x, y, colour, highlight_ids)
    if axes == "values":
        _add_intervals(fig, df)
    if df.empty:
        return _layout(fig, "Strength", "Consistency")
    # threshold and review-region cuts in axis units
    if axes == "values":
        sx = thresholds.strength_max
        cy = thresholds.consistency_min
        rx, ry = review_cuts if review_cuts else (None, None)
    else:
        s, c = df["strength"], df["consistency"]
        sx = None if thresholds.strength_max is None else rank_position(s, thresholds.strength_max, inclusive=True)
        cy = None if thresholds.consistency_min is None else rank_position(c, thresholds.consistency_min, inclusive=False)
        rx, ry = (None, None)
        if review_cuts and np.isfinite(review_cuts).all():
            rx = rank_position(s, review_cuts[0], inclusive=False)
            ry = rank_position(c, review_cuts[1], inclusive=False)
    x_lo, x_hi = _span(df[x], sx, rx)
    y_lo, y_hi = _span(df[y], cy, ry)
    x_keep = x_hi if sx is None else min(sx, x_hi)
    y_keep = y_lo if cy is None else max(cy, y_lo)
    if sx is not None:
        _region(fig, "too strong", sx, x_hi, y_lo, y_hi, label=f"too strong<br>(> {thresholds.strength_max:g})")
        fig.add_vline(x=sx, line_dash="dash", line_color=RISK_COLOURS["too strong"])
    if cy is not None:
        _region(fig, "too unstable", x_lo, x_keep, y_lo, cy, label=f"too unstable (< {thresholds.consistency_min:g})")
        fig.add_hline(y=cy, line_dash="dash", line_color=RISK_COLOURS["too unstable"])
    if rx is not None and ry is not None and np.isfinite([rx, ry]).all() and rx < x_keep:
        _region(fig, "review", max(rx, x_lo), x_keep, max(ry, y_keep), y_hi, label="review: strong and consistent")
    fig.add_annotation(
        x=x_lo,
        y=y_hi,
        xanchor="left",
        yanchor="top",
        showarrow=False,
        text="low risk: weak or inconsistent",
        font={"color": RISK_COLOURS["low risk"]},
    )
    names = {
        "values": ("Strength (substantiality)", "Consistency (volition)"),
        "ranks": ("Strength rank (1 = weakest)", "Consistency rank (1 = least consistent)"),
    }
    fig.update_xaxes(range=[x_lo, x_hi])
    fig.update_yaxes(range=[y_lo, y_hi])
    return _layout(fig, *names[axes])


def map_scatter(
    frame: pd.DataFrame,
    *,
    colour: str = "risk class",
    highlight_ids: Iterable[str] = (),
    title: str | None = None,
    labels: Sequence[PlacedLabel] = (),
    selected_region: int | None = None,
    outline: np.ndarray | None = None,
    density: Density | None = None,
    viewport: Viewport | None = None,
    webgl: bool = False,
    totals: Mapping[str, int] | None = None,
) -> go.Figure:
    """A 2-D map (columns x, y); points not fitted but *placed* (uploads) as diamonds,
    ``highlight_ids`` (e.g. search results) drawn large with an outline. The map's layers
    (:mod:`carlos.viz.map_layers`): a ``density`` under the points, region ``labels`` with
    centroid markers, the ``outline`` of the selected region; ``viewport`` fixes the axes (a zoom);
    ``webgl`` draws the points with ``scattergl`` (large maps); ``totals`` (:func:`category_totals`)
    gives the legend each colour's count over every point when only a sample is drawn."""
    _need(frame, ("lora_id", "name", "x", "y"))
    df = with_labels(frame)
    fig = go.Figure()
    if density is not None:
        map_layers.add_density(fig, density)
    _add_points(fig, df, "x", "y", colour, highlight_ids, trace=go.Scattergl if webgl else go.Scatter, totals=totals)
    if "placement" in df:
        placed = df[df["placement"] != "fitted"]
        if len(placed):
            fig.add_trace(
                go.Scatter(
                    x=placed["x"],
                    y=placed["y"],
                    mode="markers",
                    name=f"placed ({len(placed)})",
                    marker={
                        "symbol": "diamond",
                        "size": _HIGHLIGHT_SIZE,
                        "color": "rgba(0,0,0,0)",
                        "line": {"width": 2, "color": "#17becf"},
                    },
                    customdata=_customdata(placed),
                    hovertemplate=_HOVER,
                )
            )
    map_layers.add_region_labels(fig, labels, selected_region)
    map_layers.add_outline(fig, outline)
    fig.update_xaxes(showticklabels=False, title=None, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, title=None, scaleanchor="x", showgrid=False, zeroline=False)
    if viewport is not None:
        fig.update_xaxes(range=[viewport.x0, viewport.x1])
        fig.update_yaxes(range=[viewport.y0, viewport.y1])
    return _layout(fig, None, None, title=title)


def category_totals(frame: pd.DataFrame, colour: str) -> dict[str, int] | None:
    """Points per colour class of ``frame`` (every point, not only those drawn); None for a
    continuous colour."""
    col, kind, _ = COLOUR_BY.get(colour, (None, None, None))
    if kind != "category" or col is None:
        return None
    df = with_labels(frame[[c for c in ("nsfw_level", "nsfw", "status", col) if c in frame]])
    return {str(k): int(v) for k, v in df[col].astype(str).value_counts().items()} if col in df else None


def category_strength_bar(pairs: pd.DataFrame, strength: float | None = None) -> go.Figure:
    """Mean CLIP-diff norm per prompt category (Strength restricted to that category) from
    ``store.jobs.pair_results_of``, with the overall value (``strength``, default: the mean
    norm of all pairs) as a reference line."""
    _need(pairs, ("category", "norm"))
    agg = pairs.assign(category=pairs["category"].fillna("(none)")).groupby("category")["norm"].agg(["mean", "count"]).sort_values("mean")
    fig = go.Figure(
        go.Bar(
            x=agg["mean"],
            y=agg.index,
            orientation="h",
            customdata=agg["count"],
            hovertemplate="%{y}: Strength %{x:.2f} over %{customdata} pairs<extra></extra>",
            marker_color="#1f77b4",
        )
    )
    overall = float(pairs["norm"].mean()) if strength is None else strength
    if np.isfinite(overall):
        fig.add_vline(x=overall, line_dash="dash", annotation_text=f"overall {overall:.2f}")
    fig.update_layout(height=80 + 28 * len(agg), margin={"l": 10, "r": 10, "t": 30, "b": 10}, xaxis_title="Strength (mean CLIP-diff norm)")
    return fig


# -- internals ------------------------------------------------------------------------------------
_HOVER = (
    "<b>%{customdata[1]}</b><br>Strength %{customdata[2]:.2f} · Consistency %{customdata[3]:.3f}"
    "<br>%{customdata[4]} · %{customdata[5]}<extra></extra>"
)


def _need(frame: pd.DataFrame, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise InvalidInputError(f"the frame needs columns {missing}")


def _customdata(df: pd.DataFrame) -> np.ndarray:
    """(n, 6) object array: lora_id, escaped name, strength, consistency, risk class, status."""
    out = np.empty((len(df), 6), dtype=object)
    out[:, 0] = df["lora_id"].astype(str).to_numpy()
    out[:, 1] = df["name"].map(plotly_literal).to_numpy()  # creator text: no tag or entity interpreted
    out[:, 2] = df["strength"].astype(float).to_numpy()
    out[:, 3] = df["consistency"].astype(float).to_numpy()
    out[:, 4] = df["risk_class"].astype(str).to_numpy() if "risk_class" in df else ""
    out[:, 5] = df["status"].astype(str).to_numpy() if "status" in df else ""
    return out


def _add_points(
    fig: go.Figure,
    df: pd.DataFrame,
    x: str,
    y: str,
    colour: str,
    highlight_ids: Iterable[str],
    trace: type = go.Scatter,
    totals: Mapping[str, int] | None = None,
) -> None:
    if colour not in COLOUR_BY:
        raise InvalidInputError(f"unknown colour {colour!r}; choose one of {', '.join(COLOUR_BY)}")
    col, kind, scheme = COLOUR_BY[colour]
    if col not in df:
        raise InvalidInputError(f"colouring by {colour} needs a {col!r} column")
    # WebGL traces of many points carry only (id, name) and float32 positions: a third of the bytes
    lean = trace is go.Scattergl
    cd, hover = (map_layers.lean_customdata, map_layers.LEAN_HOVER) if lean else (_customdata, _HOVER)

    def xs(v: pd.Series) -> Any:
        return v.to_numpy(dtype=np.float32) if lean else v

    if kind == "category":
        order = list(scheme) + sorted(set(df[col].astype(str)) - set(scheme))
        for value in order:
            part = df[df[col].astype(str) == value]
            if part.empty:
                continue
            fig.add_trace(
                trace(
                    x=xs(part[x]),
                    y=xs(part[y]),
                    mode="markers",
                    name=f"{value} ({len(part)})" if totals is None else f"{value} ({totals.get(value, 0):,}; {len(part):,} drawn)",
                    marker={"size": _BASE_SIZE, "color": scheme.get(value, "#7f7f7f"), "opacity": 0.8},
                    customdata=cd(part),
                    hovertemplate=hover,
                )
            )
    else:
        shown = df[df[col].notna()]
        fig.add_trace(
            trace(
                x=xs(shown[x]),
                y=xs(shown[y]),
                mode="markers",
                name=colour,
                marker={
                    "size": _BASE_SIZE,
                    "color": shown[col],
                    "colorscale": scheme,
                    "showscale": True,
                    "colorbar": {"title": colour},
                    "opacity": 0.85,
                },
                customdata=cd(shown),
                hovertemplate=hover,
            )
        )
        rest = df[df[col].isna()]
        if len(rest):
            fig.add_trace(
                trace(
                    x=xs(rest[x]),
                    y=xs(rest[y]),
                    mode="markers",
                    name=f"no {colour} ({len(rest)})",
                    marker={"size": _BASE_SIZE, "color": "#d0d0d0"},
                    customdata=cd(rest),
                    hovertemplate=hover,
                )
            )
    wanted = set(highlight_ids)
    if wanted:
        hl = df[df["lora_id"].isin(wanted)]
        if len(hl):
            fig.add_trace(
                go.Scatter(
                    x=hl[x],
                    y=hl[y],
                    mode="markers+text",
                    name=f"highlighted ({len(hl)})",
                    text=hl["name"].astype(str).str.slice(0, 24).map(plotly_literal),
                    textposition="top center",
                    marker={"size": _HIGHLIGHT_SIZE, "color": "rgba(0,0,0,0)", "line": {"width": 2.5, "color": "#000"}},
                    customdata=_customdata(hl),
                    hovertemplate=_HOVER,
                )
            )


#: Columns of the 95 % intervals a frame may carry (``characterize.results.interval_frame``).
INTERVAL_COLUMNS = ("strength_lo", "strength_hi", "consistency_lo", "consistency_hi")


def _add_intervals(fig: go.Figure, df: pd.DataFrame) -> None:
    """Error bars: the 95 % intervals of the LoRAs that have them (uploads with per-pair data).
    The Consistency interval is for the full-protocol value, so it may sit a little off the point."""
    if not set(INTERVAL_COLUMNS) <= set(df.columns):
        return
    part = df.dropna(subset=list(INTERVAL_COLUMNS))
    if part.empty:
        return
    s, c = part["strength"].astype(float), part["consistency"].astype(float)
    label = part.get("risk_confidence", pd.Series("", index=part.index)).fillna("").astype(str).map(plotly_literal)
    fig.add_trace(
        go.Scatter(
            x=s,
            y=c,
            mode="markers",
            name=f"95% intervals ({len(part)})",
            marker={"size": _BASE_SIZE, "color": "rgba(0,0,0,0)"},
            error_x=_bars(part["strength_lo"], s, part["strength_hi"]),
            error_y=_bars(part["consistency_lo"], c, part["consistency_hi"]),
            text=[
                f"Strength 95%: {a:.3g}–{b:.3g}<br>Consistency 95%: {e:.3g}–{f:.3g}<br>{r}"
                for a, b, e, f, r in zip(part["strength_lo"], part["strength_hi"], part["consistency_lo"], part["consistency_hi"], label)
            ],
            customdata=_customdata(part),
            hovertemplate=_HOVER.replace("<extra></extra>", "<br>%{text}<extra></extra>"),
        )
    )


def _bars(lo: pd.Series, mid: pd.Series, hi: pd.Series) -> dict[str, Any]:
    return {"type": "data", "symmetric": False, "array": (hi - mid).clip(lower=0), "arrayminus": (mid - lo).clip(lower=0), "color": "#444"}


def _span(values: pd.Series, *cuts: float | None) -> tuple[float, float]:
    pts = [float(values.min()), float(values.max())] + [float(c) for c in cuts if c is not None and np.isfinite(c)]
    lo, hi = min(pts), max(pts)
    pad = (hi - lo) * 0.04 or 1.0
    return lo - pad, hi + pad


def _region(fig: go.Figure, name: str, x0: float, x1: float, y0: float, y1: float, label: str | None = None) -> None:
    if x1 <= x0 or y1 <= y0:
        return
    fig.add_shape(type="rect", x0=x0, x1=x1, y0=y0, y1=y1, line_width=0, fillcolor=REGION_FILL[name], layer="below")
    top = name != "too unstable"
    fig.add_annotation(
        x=x0,
        y=y1 if top else y0,
        xanchor="left",
        yanchor="top" if top else "bottom",
        showarrow=False,
        text=label or name,
        font={"color": RISK_COLOURS[name]},
    )


def _layout(fig: go.Figure, xtitle: str | None, ytitle: str | None, title: str | None = None) -> go.Figure:
    fig.update_layout(
        title=title,
        xaxis_title=xtitle,
        yaxis_title=ytitle,
        height=620,
        dragmode="select",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    return fig


__all__ = [
    "AXES",
    "COLOUR_BY",
    "INTERVAL_COLUMNS",
    "RISK_CLASSES",
    "add_ranks",
    "category_strength_bar",
    "category_totals",
    "map_scatter",
    "rank_position",
    "risk_scatter",
    "selected_ids",
    "with_labels",
]
