"""What the map draws and selects: every point up to the budget, then a density plus a stable
sample; selections answered from every point (box, lasso, clicks, region markers); viewports and
boxes from links; labels that do not overlap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carlos.errors import InvalidInputError
from carlos.viz import clusters, mapview


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    xy = rng.normal(size=(n, 2))
    return pd.DataFrame({"lora_id": [f"l{i}" for i in range(n)], "name": [f"n{i}" for i in range(n)], "x": xy[:, 0], "y": xy[:, 1]})


def test_every_point_is_drawn_up_to_the_budget_then_a_density_and_a_stable_sample() -> None:
    df = _frame(3000)
    small = mapview.aggregate(df, None, mapview.MapViewConfig(max_points=5000, sample_points=100))
    assert not small.sampled and len(small.points) == 3000 and small.n_in_view == 3000
    cfg = mapview.MapViewConfig(max_points=1000, sample_points=200, bins=20)
    big = mapview.aggregate(df, None, cfg, always=["l7"])
    assert big.sampled and big.n_in_view == 3000
    assert 200 <= len(big.points) <= 201 and "l7" in set(big.points["lora_id"])
    assert big.density.counts.sum() == 3000 and max(big.density.counts.shape) == 20
    # the same points stay drawn from one rerun (or row order) to the next
    again = mapview.aggregate(df.sample(frac=1.0, random_state=3), None, cfg, always=["l7"])
    assert set(again.points["lora_id"]) == set(big.points["lora_id"])
    # a zoom re-aggregates: few enough points in the smaller viewport are all drawn
    vp = mapview.Viewport(-0.3, 0.3, -0.3, 0.3)
    zoomed = mapview.aggregate(df, vp, cfg)
    inside = vp.contains(df[["x", "y"]].to_numpy())
    assert not zoomed.sampled and set(zoomed.points["lora_id"]) == set(df.loc[inside, "lora_id"])


def test_selections_are_answered_from_every_point() -> None:
    df = _frame(2000, seed=1)
    xy = df[["x", "y"]].to_numpy()
    box = mapview.Selection(box=(0.5, -0.5, -0.2, 0.4))  # corners in any order
    expected = (np.abs(xy[:, 0]) <= 0.5) & (xy[:, 1] >= -0.2) & (xy[:, 1] <= 0.4)
    assert set(box.members(df)["lora_id"]) == set(df.loc[expected, "lora_id"])
    # a lasso: the unit square as a polygon selects what the box does, and a triangle half of it
    square = mapview.Selection(lasso=((0.0, 1.0, 1.0, 0.0), (0.0, 0.0, 1.0, 1.0)))
    in_square = (xy[:, 0] > 0) & (xy[:, 0] < 1) & (xy[:, 1] > 0) & (xy[:, 1] < 1)
    assert set(square.members(df)["lora_id"]) == set(df.loc[in_square, "lora_id"])
    tri = mapview.in_polygon(xy, (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), chunk=64)
    assert np.array_equal(tri, in_square & (xy[:, 0] + xy[:, 1] < 1))
    clicked = mapview.Selection(ids=("l5", "l2"))
    assert clicked.members(df)["lora_id"].tolist() == ["l5", "l2"]
    with pytest.raises(InvalidInputError):
        mapview.in_polygon(xy, (0.0, 1.0), (0.0, 1.0))


def test_streamlit_selection_states_become_selections_and_hostile_ones_nothing() -> None:
    assert mapview.parse_selection(None).empty
    box = {"points": [{"customdata": ["l1", "n1"]}], "box": [{"xref": "x", "yref": "y", "x": [2.0, -1.0], "y": [0.0, 3.0]}], "lasso": []}
    assert mapview.parse_selection(box).box == (-1.0, 2.0, 0.0, 3.0)  # the box wins over the sample it caught
    lasso = {"points": [], "box": [], "lasso": [{"x": [0, 1, 1], "y": [0, 0, 1]}]}
    assert mapview.parse_selection(lasso).lasso == ((0.0, 1.0, 1.0), (0.0, 0.0, 1.0))
    click = {"points": [{"customdata": ["l3", "n3"]}, {"customdata": ["l4"]}], "box": [], "lasso": []}
    assert mapview.parse_selection(click).ids == ("l3", "l4")
    marker = {"points": [{"customdata": [mapview.REGION_PREFIX + "4", "label", 12]}], "box": [], "lasso": []}
    assert mapview.parse_selection(marker).region == 4 and not mapview.parse_selection(marker).ids
    assert mapview.parse_selection({"points": [], "box": [{"x": ["a", "b"], "y": [0, 1]}], "lasso": []}).empty
    assert mapview.parse_selection({"points": [{"customdata": [mapview.REGION_PREFIX + "x"]}]}).empty


def test_viewports_and_boxes_come_from_links_and_refuse_garbage() -> None:
    vp = mapview.Viewport.parse("-1.5,2,0,3.25")
    assert vp == mapview.Viewport(-1.5, 2.0, 0.0, 3.25) and mapview.Viewport.parse(vp.param()) == vp
    assert mapview.parse_box(mapview.box_param((0.0, 1.0, 2.0, 3.0))) == (0.0, 1.0, 2.0, 3.0)
    for bad in ("1,2,3", "a,b,c,d", "2,1,0,1", "0,1,0,nan", "0,inf,0,1"):
        with pytest.raises(InvalidInputError):
            mapview.Viewport.parse(bad)
    around = mapview.Viewport.around(np.array([[0.0, 0.0], [10.0, 5.0], [np.nan, 1.0]]))
    assert around.x0 < 0 < 10 < around.x1 and around.y0 < 0 < 5 < around.y1


def test_labels_are_placed_largest_first_without_overlapping() -> None:
    def cluster(i: int, x: float, y: float, size: int, label: str = "a rather long region label") -> clusters.Cluster:
        return clusters.Cluster(i, label, (), size, (x, y))

    near = [cluster(i, 0.0 + 0.01 * i, 0.0, 100 - i) for i in range(12)] + [cluster(99, 50.0, 50.0, 1)]  # last one out of view
    vp = mapview.Viewport(-10, 10, -10, 10)
    placed = mapview.place_labels(near, vp, width_px=900, height_px=540)
    assert placed[0].cluster_id == 0 and (placed[0].ax, placed[0].ay) == mapview.OFFSETS[0]
    assert [p.cluster_id for p in placed] == list(range(len(placed)))  # largest first
    assert 99 not in {p.cluster_id for p in placed} and 6 <= len(placed) < 12  # the rest have no free place
    scale = min(900 / 20, 540 / 20)
    boxes = []
    for p in placed:
        px, py = 450 + p.x * scale + p.ax, 270 - p.y * scale + p.ay
        w = 6.8 * len(p.label) + 8
        boxes.append((px - w / 2, px + w / 2, py - 9, py + 9))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not (a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3])
    assert [p.cluster_id for p in mapview.place_labels(near, vp, max_labels=3)] == [0, 1, 2]


def test_region_table_and_hull() -> None:
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
    h = mapview.hull(xy)
    assert h is not None and len(h) == 5 and np.allclose(h[0], h[-1]) and not any(np.allclose(p, [0.5, 0.5]) for p in h)
    assert mapview.hull(np.zeros((2, 2))) is None and mapview.hull(np.array([[0, 0], [1, 1], [2, 2]])) is None
    result = clusters.cluster_map(np.zeros((5, 2)), list("abcde"), list("abcde"), risk=["low risk"] * 4 + ["review"])
    table = mapview.region_table(result, ("review", "low risk"))
    assert table.to_dict("records") == [{"cluster_id": -1, "region": "unclustered", "LoRAs": 5, "review": 1, "low risk": 4}]


def test_view_config_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("CARLOS_MAP_MAX_POINTS", "300")
    assert mapview.MapViewConfig.from_env() == mapview.MapViewConfig(max_points=300, sample_points=300)
    monkeypatch.setenv("CARLOS_MAP_SAMPLE_POINTS", "50")
    assert mapview.MapViewConfig.from_env().sample_points == 50
    monkeypatch.setenv("CARLOS_MAP_MAX_POINTS", "many")
    with pytest.raises(InvalidInputError):
        mapview.MapViewConfig.from_env()


def test_a_map_is_found_whatever_order_the_store_returns_its_rows_in() -> None:
    """A parallel scan of a large table returns rows in any order: the same LoRAs and vectors
    must give the same map key (else a million-LoRA map is never found again)."""
    from carlos.viz import maps

    rng = np.random.default_rng(0)
    ids = [f"l{i}" for i in range(200)]
    m = rng.normal(size=(200, 8)).astype(np.float32)
    perm = rng.permutation(200)
    key = maps.map_key("s", ids, m, maps.MapConfig())
    assert maps.map_key("s", [ids[i] for i in perm], m[perm], maps.MapConfig()) == key
    swapped = m.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # the same rows, paired with other ids: another map
    assert maps.map_key("s", ids, swapped, maps.MapConfig()) != key
