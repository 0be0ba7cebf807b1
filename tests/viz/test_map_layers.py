"""The map's layers: region labels are creator words, so Plotly gets them as literal text (no tag,
link or entity interpreted) in annotations, hover data and tick labels; the density counts every
point once; the risk-mix bars stack each region's classes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from carlos.core.risk import RISK_CLASSES
from carlos.viz import figures, map_layers, mapview

HOSTILE = '<a href="http://evil">x</a> <b>bold</b> &amp; <img src=http://evil/p.png>'


def test_hostile_region_labels_stay_literal_everywhere_plotly_shows_them() -> None:
    label = mapview.PlacedLabel(3, HOSTILE, 12, 0.0, 0.0, 0.0, -20.0)
    fig = go.Figure()
    map_layers.add_region_labels(fig, [label], selected=3)
    text = fig.layout.annotations[0].text
    assert "<" not in text and ">" not in text and "&lt;b&gt;bold&lt;/b&gt;" in text and "&amp;amp;" in text
    assert fig.layout.annotations[0].bordercolor == map_layers.SELECTED_BORDER
    centres = fig.data[0]
    assert centres.customdata[0][0] == "region:3" and centres.customdata[0][1] == text
    table = pd.DataFrame([{"cluster_id": 3, "region": HOSTILE, "LoRAs": 12, **dict.fromkeys(RISK_CLASSES, 3)}])
    bars = map_layers.risk_mix_bar(table, RISK_CLASSES, selected=3)
    ticks = bars.layout.yaxis.ticktext
    assert ticks == ("▶ " + text,) and all("<" not in t for t in ticks)
    assert [t.name for t in bars.data] == list(RISK_CLASSES) and bars.layout.barmode == "stack"
    assert all(t.customdata[0][0] == "region:3" for t in bars.data)


def test_a_large_map_figure_is_webgl_with_a_density_under_its_sample() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    frame = pd.DataFrame(
        {
            "lora_id": [f"l{i}" for i in range(n)],
            "name": [f"<b>n{i}</b>" for i in range(n)],
            "x": rng.normal(size=n),
            "y": rng.normal(size=n),
            "strength": 1.0,
            "consistency": 0.1,
            "risk_class": rng.choice(list(RISK_CLASSES), size=n),
        }
    )
    layer = mapview.aggregate(frame, None, mapview.MapViewConfig(max_points=1000, sample_points=300))
    totals = figures.category_totals(frame, "risk class")
    assert sum(totals.values()) == n
    fig = figures.map_scatter(layer.points, density=layer.density, viewport=layer.viewport, webgl=True, totals=totals)
    assert fig.data[0].type == "heatmap" and int(np.asarray(fig.data[0].customdata).sum()) == n
    points = [t for t in fig.data if t.type == "scattergl"]
    assert sum(len(t.x) for t in points) == 300 and all(np.asarray(t.x).dtype == np.float32 for t in points)
    assert all(t.customdata.shape[1] == 2 and "<" not in t.customdata[0][1] for t in points)  # id, escaped name
    for t in points:
        cls = t.name.split(" (")[0]
        assert t.name == f"{cls} ({totals[cls]:,}; {len(t.x):,} drawn)"
    assert list(fig.layout.xaxis.range) == [layer.viewport.x0, layer.viewport.x1]
    assert figures.category_totals(frame, "Strength") is None
