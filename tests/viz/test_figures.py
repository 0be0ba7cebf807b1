"""Plotly figure builders: every LoRA drawn once, ids recoverable from a selection,
threshold lines and regions where the thresholds are, on value and rank axes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carlos.config import Thresholds
from carlos.core.risk import RiskPolicy, annotate
from carlos.errors import InvalidInputError
from carlos.viz import figures as plots


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 120
    df = pd.DataFrame(
        {
            "lora_id": [f"t:{i}" for i in range(n)],
            "name": [f"LoRA <{i}> & co" for i in range(n)],
            "model_id": np.arange(n),
            "source": "test",
            "strength": rng.uniform(1, 11, n),
            "consistency": rng.uniform(0.0, 0.5, n),
            "nsfw_level": pd.array([1, 2, 4, None] * (n // 4), dtype="Int32"),
        }
    )
    return annotate(df, RiskPolicy(thresholds=Thresholds(9.0, 0.1)))


def _point_ids(fig, trace_filter=lambda t: True) -> list[str]:
    return [cd[0] for t in fig.data if trace_filter(t) for cd in t.customdata]


def _shapes(fig, type_: str) -> list:
    return [s for s in fig.layout.shapes if s.type == type_]


def test_risk_scatter_draws_every_lora_once_grouped_by_class(frame: pd.DataFrame) -> None:
    cuts = (frame.attrs["review_strength_min"], frame.attrs["review_consistency_min"])
    fig = plots.risk_scatter(frame, Thresholds(9.0, 0.1), review_cuts=cuts)
    ids = _point_ids(fig)
    assert sorted(ids) == sorted(frame["lora_id"]) and len(ids) == len(set(ids))
    counts = frame["risk_class"].value_counts()
    for trace in fig.data:
        cls, n = trace.name.rsplit(" (", 1)
        assert counts[cls] == int(n.rstrip(")")) == len(trace.x)
        assert set(frame.set_index("lora_id").loc[[c[0] for c in trace.customdata], "risk_class"]) == {cls}
    # values travel as numbers (the hover formats them), names escaped
    cd = fig.data[0].customdata[0]
    assert isinstance(cd[2], float) and "&lt;" in cd[1]


def test_threshold_lines_and_regions_sit_at_the_thresholds(frame: pd.DataFrame) -> None:
    cuts = (frame.attrs["review_strength_min"], frame.attrs["review_consistency_min"])
    fig = plots.risk_scatter(frame, Thresholds(9.0, 0.1), review_cuts=cuts)
    lines = _shapes(fig, "line")
    assert {(s.x0, s.x1) for s in lines if s.xref == "x"} == {(9.0, 9.0)}
    assert {(s.y0, s.y1) for s in lines if s.yref == "y"} == {(0.1, 0.1)}
    rects = _shapes(fig, "rect")
    strong = [r for r in rects if r.x0 == 9.0]
    review = [r for r in rects if r.x0 == pytest.approx(cuts[0])]
    assert len(strong) == 1 and len(review) == 1 and review[0].y0 == pytest.approx(cuts[1])
    texts = {a.text for a in fig.layout.annotations}
    assert {"too strong<br>(> 9)", "too unstable (< 0.1)", "review: strong and consistent"} <= texts
    # disabled filters draw no line and no filtered region
    off = plots.risk_scatter(frame, Thresholds(None, None), review_cuts=cuts)
    assert not _shapes(off, "line")
    assert not any(a.text.startswith("too") for a in off.layout.annotations)


def test_rank_axes_put_the_lines_between_kept_and_filtered_ranks(frame: pd.DataFrame) -> None:
    fig = plots.risk_scatter(frame, Thresholds(9.0, 0.1), axes="ranks")
    n_kept_s = int((frame["strength"] <= 9.0).sum())
    n_unstable = int((frame["consistency"] < 0.1).sum())
    lines = _shapes(fig, "line")
    assert [s.x0 for s in lines if s.xref == "x"] == [n_kept_s + 0.5]
    assert [s.y0 for s in lines if s.yref == "y"] == [n_unstable + 0.5]
    xs = np.concatenate([np.asarray(t.x) for t in fig.data])
    assert sorted(xs.tolist()) == list(range(1, len(frame) + 1))
    # a LoRA right of the line is exactly a too-strong one
    right = {cd[0] for t in fig.data for x, cd in zip(t.x, t.customdata) if x > n_kept_s + 0.5}
    assert right == set(frame.loc[frame["strength"] > 9.0, "lora_id"])
    assert "rank" in fig.layout.xaxis.title.text


def test_colour_choices_and_bad_input(frame: pd.DataFrame) -> None:
    fig = plots.risk_scatter(frame, Thresholds(), colour="NSFW level")
    assert {t.name.rsplit(" (", 1)[0] for t in fig.data} == {"PG", "PG-13", "R", "unknown"}
    fig = plots.risk_scatter(frame.assign(status="flagged"), Thresholds(), colour="review status")
    assert [t.name for t in fig.data] == [f"flagged ({len(frame)})"]
    with pytest.raises(InvalidInputError, match="axes"):
        plots.risk_scatter(frame, Thresholds(), axes="log")
    with pytest.raises(InvalidInputError, match="unknown colour"):
        plots.risk_scatter(frame, Thresholds(), colour="mood")
    with pytest.raises(InvalidInputError, match="score"):
        plots.risk_scatter(frame, Thresholds(), colour="search score")
    with pytest.raises(InvalidInputError, match="columns"):
        plots.risk_scatter(frame.drop(columns="strength"), Thresholds())


def test_map_scatter_highlights_and_marks_placed_points(frame: pd.DataFrame) -> None:
    df = frame.assign(x=np.arange(len(frame), dtype=float), y=0.0, placement="fitted", score=np.linspace(0, 1, len(frame)))
    df.loc[df.index[:3], "placement"] = "knn-fallback"
    fig = plots.map_scatter(df, colour="search score", highlight_ids=["t:5", "t:7", "nope"])
    base = fig.data[0]
    assert base.marker.showscale and len(base.x) == len(frame)
    hl = next(t for t in fig.data if t.name.startswith("highlighted"))
    assert [c[0] for c in hl.customdata] == ["t:5", "t:7"] and hl.marker.size > base.marker.size
    placed = next(t for t in fig.data if t.name.startswith("placed"))
    assert [c[0] for c in placed.customdata] == ["t:0", "t:1", "t:2"]


def test_selected_ids_reads_customdata_in_order_without_duplicates() -> None:
    sel = {
        "points": [{"customdata": ["a", "x"]}, {"customdata": ["b"]}, {"customdata": ["a"]}, {"point_index": 4}, {"customdata": "c"}],
        "box": [],
        "lasso": [],
    }
    assert plots.selected_ids(sel) == ["a", "b", "c"]
    assert plots.selected_ids(None) == [] and plots.selected_ids({"points": []}) == []


def test_category_strength_bar_is_the_mean_norm_per_category() -> None:
    pairs = pd.DataFrame({"category": ["Food", "Food", "Logos", None], "norm": [1.0, 3.0, 5.0, 7.0]})
    fig = plots.category_strength_bar(pairs, strength=4.0)
    got = dict(zip(fig.data[0].y, fig.data[0].x))
    assert got == {"Food": 2.0, "Logos": 5.0, "(none)": 7.0}
    assert sorted(fig.data[0].customdata) == [1, 1, 2]
