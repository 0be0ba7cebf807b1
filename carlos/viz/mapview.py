"""What the Map page draws and selects, at any corpus size: viewport, aggregation, selection.

* **Every point up to a budget, then density plus a sample.** A browser draws ~100k WebGL points
  (Plotly ``scattergl``) interactively, even with software WebGL; beyond
  :attr:`MapViewConfig.max_points` points in the viewport, :func:`aggregate` sends the counts
  of a grid of cells (a heatmap, ~160 cells on the long side) and a sample of
  :attr:`MapViewConfig.sample_points` points. The sample is the points with the smallest hash
  of their id, so the same points stay drawn from one rerun or zoom to the next, and a zoom
  (a smaller viewport: :class:`Viewport`, kept in the URL) re-aggregates: fewer points in view,
  so more or all of them are drawn. Highlighted points (search hits) and uploads are always drawn.
* **Selections are answered on the server from every point**, not from what was drawn: a box
  or lasso selects every LoRA whose coordinates fall inside it (:func:`in_box`,
  :func:`in_polygon`), so a selection over the density lists the LoRAs it covers. Clicked points
  give their ids; a clicked region marker (``customdata`` ``"region:<id>"``) selects a region.
* **Labels** are placed greedily, largest region first, at the first of a few pixel offsets from
  the centroid where the label's box overlaps no label already placed (:func:`place_labels`).

Pure numpy/pandas over frames with ``lora_id, x, y`` (no store, no streamlit), except the two
service helpers at the end, which read a cached map: :func:`current_map` and :func:`regions_of`.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from carlos.errors import InvalidInputError
from carlos.viz import clusters as regions_mod
from carlos.viz import maps

#: A clicked region marker carries this prefix and the region's id as its customdata.
REGION_PREFIX = "region:"
#: Above this many LoRAs a picker offers only the ids at hand (search hits, a link's), not every name.
MANY_OPTIONS = 20_000


@dataclass(frozen=True)
class MapViewConfig:
    """How much the browser is sent; every field bounds one cost of a rerun."""

    max_points: int = 100_000  # draw every point in view up to this many (WebGL above svg_max_points)
    sample_points: int = 20_000  # above max_points: a density grid plus this many sampled points
    bins: int = 160  # density cells along the viewport's longer side
    svg_max_points: int = 5_000  # up to this many drawn points: SVG scatter (crisper, any browser)
    max_labels: int = 40  # region labels drawn at most (the table lists every region)

    def __post_init__(self) -> None:
        if not 1 <= self.sample_points <= self.max_points or self.bins < 8 or self.svg_max_points < 0 or self.max_labels < 0:
            raise InvalidInputError("need 1 ≤ sample_points ≤ max_points, bins ≥ 8, svg_max_points ≥ 0 and max_labels ≥ 0")

    @classmethod
    def from_env(cls) -> MapViewConfig:
        """The defaults, or ``CARLOS_MAP_MAX_POINTS`` / ``CARLOS_MAP_SAMPLE_POINTS`` where set (a
        deployment whose reviewers have slow machines; a test drawing a small map as a large one)."""
        values: dict[str, int] = {}
        for name, field_name in (("CARLOS_MAP_MAX_POINTS", "max_points"), ("CARLOS_MAP_SAMPLE_POINTS", "sample_points")):
            raw = os.environ.get(name)
            if raw:
                try:
                    values[field_name] = int(raw)
                except ValueError:
                    raise InvalidInputError(f"{name} must be an integer, got {raw!r}") from None
        if "max_points" in values and "sample_points" not in values:
            values["sample_points"] = min(cls.sample_points, values["max_points"])
        return cls(**values)


@dataclass(frozen=True)
class Viewport:
    """The part of the map in view: ``x0 < x1``, ``y0 < y1`` in map coordinates."""

    x0: float
    x1: float
    y0: float
    y1: float

    def __post_init__(self) -> None:
        vals = (self.x0, self.x1, self.y0, self.y1)
        if not all(math.isfinite(v) for v in vals) or not (self.x0 < self.x1 and self.y0 < self.y1):
            raise InvalidInputError(f"a viewport needs finite x0 < x1 and y0 < y1, got {vals}")

    @classmethod
    def parse(cls, text: str) -> Viewport:
        """From a URL parameter ``x0,x1,y0,y1`` (a shared link: untrusted)."""
        parts = [p for p in str(text).split(",") if p.strip()]
        if len(parts) != 4:
            raise InvalidInputError(f"a viewport is four numbers x0,x1,y0,y1, got {text!r}")
        try:
            x0, x1, y0, y1 = (float(p) for p in parts)
        except ValueError:
            raise InvalidInputError(f"a viewport is four numbers x0,x1,y0,y1, got {text!r}") from None
        return cls(x0, x1, y0, y1)

    @classmethod
    def around(cls, xy: np.ndarray, pad: float = 0.04) -> Viewport:
        """The bounding box of ``xy`` (n, 2) with a margin of ``pad`` of its span."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        xy = xy[np.isfinite(xy).all(axis=1)]
        if not len(xy):
            return cls(-1.0, 1.0, -1.0, 1.0)
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        span = np.maximum(hi - lo, 1e-6)
        return cls(float(lo[0] - pad * span[0]), float(hi[0] + pad * span[0]), float(lo[1] - pad * span[1]), float(hi[1] + pad * span[1]))

    def param(self) -> str:
        """For the URL: four numbers, 5 significant digits each."""
        return ",".join(f"{v:.5g}" for v in (self.x0, self.x1, self.y0, self.y1))

    def contains(self, xy: np.ndarray) -> np.ndarray:
        return in_box(xy, (self.x0, self.x1), (self.y0, self.y1))


@dataclass(frozen=True)
class Density:
    """Counts of points per grid cell of a viewport (rows: y, columns: x)."""

    counts: np.ndarray  # (ny, nx) int
    x: np.ndarray  # (nx,) cell centres
    y: np.ndarray  # (ny,) cell centres


@dataclass(frozen=True)
class MapLayer:
    """What to draw for one viewport: the points (all in view, or a sample) and maybe a density."""

    points: pd.DataFrame  # rows of the input frame to draw as markers
    density: Density | None  # None: every point in view is drawn
    viewport: Viewport
    n_in_view: int
    n_total: int

    @property
    def sampled(self) -> bool:
        return self.density is not None


def in_box(xy: np.ndarray, xs: Sequence[float], ys: Sequence[float]) -> np.ndarray:
    """Mask of the points inside the axis-aligned box (either corner order, edges included)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    x0, x1 = sorted(float(v) for v in xs)
    y0, y1 = sorted(float(v) for v in ys)
    return (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)


def in_polygon(xy: np.ndarray, xs: Sequence[float], ys: Sequence[float], chunk: int = 262_144) -> np.ndarray:
    """Mask of the points inside a closed polygon (even-odd rule, vertices in order), in chunks of
    points so a million points and a long lasso stay within a few hundred MB."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    px, py = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if px.shape != py.shape or len(px) < 3:
        raise InvalidInputError("a lasso needs at least 3 vertices with x and y each")
    inside = np.zeros(len(xy), dtype=bool)
    bbox = in_box(xy, (px.min(), px.max()), (py.min(), py.max()))
    rows = np.flatnonzero(bbox)
    qx, qy = np.roll(px, -1), np.roll(py, -1)
    step = max(1, chunk // max(len(px), 1))
    for start in range(0, len(rows), step):
        r = rows[start : start + step]
        x, y = xy[r, 0:1], xy[r, 1:2]
        crosses = (py > y) != (qy > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = px + (y - py) * (qx - px) / (qy - py)
        inside[r] = (crosses & (x < at)).sum(axis=1) % 2 == 1
    return inside


def stable_rank(ids: pd.Series) -> np.ndarray:
    """A fixed pseudo-random order of ids (a hash of each id): the sample drawn is the same
    points wherever they are in view."""
    return pd.util.hash_pandas_object(pd.Series(ids, dtype=object).astype(str), index=False).to_numpy()


def aggregate(
    frame: pd.DataFrame,
    viewport: Viewport | None = None,
    config: MapViewConfig | None = None,
    *,
    always: Sequence[str] = (),
) -> MapLayer:
    """The points to draw in ``viewport`` (default: all points): every one up to
    ``max_points``, else a density grid and the ``sample_points`` of lowest :func:`stable_rank`.
    ``always`` (ids) and placed points (uploads) are drawn in any case."""
    cfg = config or MapViewConfig()
    xy = frame[["x", "y"]].to_numpy(dtype=np.float64)
    finite = np.isfinite(xy).all(axis=1)
    vp = viewport or Viewport.around(xy[finite])
    in_view = finite & vp.contains(xy)
    n_in = int(in_view.sum())
    if n_in <= cfg.max_points:
        return MapLayer(frame[in_view], None, vp, n_in, len(frame))
    rows = np.flatnonzero(in_view)
    rank = stable_rank(frame["lora_id"].iloc[rows])
    keep = np.zeros(len(frame), dtype=bool)
    keep[rows[np.argpartition(rank, cfg.sample_points - 1)[: cfg.sample_points]]] = True
    keep |= in_view & frame["lora_id"].isin(set(always)).to_numpy()
    if "placement" in frame:
        keep |= in_view & (frame["placement"] != "fitted").to_numpy()
    return MapLayer(frame[keep], density(xy[in_view], vp, cfg.bins), vp, n_in, len(frame))


def density(xy: np.ndarray, viewport: Viewport, bins: int) -> Density:
    """Counts on square cells: ``bins`` along the longer side of the viewport."""
    w, h = viewport.x1 - viewport.x0, viewport.y1 - viewport.y0
    cell = max(w, h) / bins
    nx, ny = max(1, math.ceil(w / cell)), max(1, math.ceil(h / cell))
    xe = viewport.x0 + cell * np.arange(nx + 1)
    ye = viewport.y0 + cell * np.arange(ny + 1)
    counts, _, _ = np.histogram2d(xy[:, 0], xy[:, 1], bins=[xe, ye])
    return Density(counts.T.astype(np.int64), (xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2)


@dataclass(frozen=True)
class Selection:
    """A chart selection, as the server answers it."""

    box: tuple[float, float, float, float] | None = None  # x0, x1, y0, y1
    lasso: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # vertex xs, ys
    ids: tuple[str, ...] = ()  # clicked (or drawn-and-selected) points' lora ids
    region: int | None = None  # a clicked region marker

    @property
    def empty(self) -> bool:
        return self.box is None and self.lasso is None and not self.ids and self.region is None

    def members(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of ``frame`` (every point, not only those drawn) inside the box or lasso, else the clicked ids."""
        xy = frame[["x", "y"]].to_numpy(dtype=np.float64)
        if self.box is not None:
            return frame[in_box(xy, self.box[:2], self.box[2:])]
        if self.lasso is not None:
            return frame[in_polygon(xy, *self.lasso)]
        if self.ids:
            order = {lid: i for i, lid in enumerate(self.ids)}
            hit = frame[frame["lora_id"].isin(order)]
            return hit.iloc[np.argsort([order[i] for i in hit["lora_id"]], kind="stable")]
        return frame.iloc[:0]


def parse_selection(selection: Mapping[str, Any] | None) -> Selection:
    """Streamlit's Plotly selection state (points, box, lasso) as a :class:`Selection`; the last
    box or lasso drawn wins over the points it caught (they may be only the drawn sample)."""
    if not selection:
        return Selection()
    box = next((b for b in reversed(selection.get("box") or []) if len(b.get("x", [])) == 2 and len(b.get("y", [])) == 2), None)
    lasso = next((s for s in reversed(selection.get("lasso") or []) if len(s.get("x", [])) >= 3), None)
    ids: dict[str, None] = {}
    region = None
    for p in selection.get("points") or []:
        cd = p.get("customdata")
        cd = cd[0] if isinstance(cd, (list, tuple)) and cd else cd
        if isinstance(cd, str) and cd.startswith(REGION_PREFIX):
            try:
                region = int(cd[len(REGION_PREFIX) :])
            except ValueError:
                continue
        elif isinstance(cd, str) and cd:
            ids[cd] = None
    try:
        if box is not None:
            return Selection(box=(*sorted(map(float, box["x"])), *sorted(map(float, box["y"]))))  # type: ignore[arg-type]
        if lasso is not None:
            return Selection(lasso=(tuple(map(float, lasso["x"])), tuple(map(float, lasso["y"]))))
    except (TypeError, ValueError):
        return Selection()  # a malformed event (the client is untrusted): nothing selected
    return Selection(ids=tuple(ids), region=region if not ids else None)


def box_param(box: tuple[float, float, float, float] | None) -> str | None:
    """A box selection for the URL (as :meth:`Viewport.param`)."""
    return None if box is None else ",".join(f"{v:.5g}" for v in box)


def parse_box(text: str) -> tuple[float, float, float, float]:
    vp = Viewport.parse(text)
    return (vp.x0, vp.x1, vp.y0, vp.y1)


@dataclass(frozen=True)
class PlacedLabel:
    """A region label to draw: text offset (pixels) from its centroid."""

    cluster_id: int
    label: str
    size: int
    x: float
    y: float
    ax: float  # Plotly annotation offsets: the text sits (ax, ay) pixels from (x, y)
    ay: float


#: Offsets tried for a label, in order (x in units of half the label's width plus 6 px, y in
#: pixels): above, below, right, left, the four diagonals (clear of a label above or below), then
#: farther above and below.
OFFSETS = ((0, -20), (0, 20), (1, 0), (-1, 0), (2, -20), (-2, -20), (2, 20), (-2, 20), (0, -44), (0, 44))


def place_labels(
    regions: Sequence[regions_mod.Cluster],
    viewport: Viewport,
    *,
    width_px: float = 900,
    height_px: float = 540,
    char_px: float = 6.8,
    line_px: float = 18,
    max_labels: int = 40,
) -> list[PlacedLabel]:
    """Labels of the regions whose centroid is in view, largest first, each at the first offset
    where its box overlaps no label already placed; a region with no free offset is not labelled
    (the region table lists it). The plot keeps equal axis scales, so one scale maps both axes."""
    scale = min(width_px / (viewport.x1 - viewport.x0), height_px / (viewport.y1 - viewport.y0))
    cx, cy = (viewport.x0 + viewport.x1) / 2, (viewport.y0 + viewport.y1) / 2
    boxes: list[tuple[float, float, float, float]] = []
    out: list[PlacedLabel] = []
    for r in sorted((r for r in regions if r.cluster_id != regions_mod.NOISE), key=lambda r: (-r.size, r.cluster_id)):
        if len(out) >= max_labels:
            break
        x, y = r.centroid
        if not (viewport.x0 <= x <= viewport.x1 and viewport.y0 <= y <= viewport.y1):
            continue
        px, py = width_px / 2 + (x - cx) * scale, height_px / 2 - (y - cy) * scale  # pixels, y down
        w, h = char_px * len(r.label) + 8, line_px
        for kx, ay in OFFSETS:
            ax = kx * (w / 2 + 6)
            b = (px + ax - w / 2, px + ax + w / 2, py + ay - h / 2, py + ay + h / 2)
            if not any(b[0] < o[1] and o[0] < b[1] and b[2] < o[3] and o[2] < b[3] for o in boxes):
                boxes.append(b)
                out.append(PlacedLabel(r.cluster_id, r.label, r.size, x, y, float(ax), float(ay)))
                break
    return out


def hull(xy: np.ndarray) -> np.ndarray | None:
    """The convex hull (closed, (k, 2)) of a region's points, for its outline; None if degenerate."""
    from scipy.spatial import ConvexHull, QhullError

    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    xy = xy[np.isfinite(xy).all(axis=1)]
    if len(xy) < 3:
        return None
    try:
        v = ConvexHull(xy).vertices
    except QhullError:
        return None
    return xy[np.append(v, v[0])]


def with_regions(frame: pd.DataFrame, result: regions_mod.MapClusters) -> pd.DataFrame:
    """``frame`` (``lora_id, x, y`` and maybe ``placement``) with each point's ``cluster_id`` and
    ``cluster`` label: the fitted points' clusters, placed points (uploads) assigned where they lie."""
    out = frame.merge(result.assignment[["lora_id", "cluster_id", "cluster"]], on="lora_id", how="left")
    todo = out["cluster_id"].isna().to_numpy() & np.isfinite(out[["x", "y"]].to_numpy(dtype=np.float64)).all(axis=1)
    if todo.any():
        fitted = out.loc[~out["cluster_id"].isna(), ["lora_id", "x", "y"]]
        got = regions_mod.assign(result, fitted, out.loc[todo, ["x", "y"]].to_numpy(dtype=np.float64))
        labels = result.labels()
        out.loc[todo, "cluster_id"] = got
        out.loc[todo, "cluster"] = [labels.get(c, regions_mod.NOISE_LABEL) for c in got]
    out["cluster_id"] = out["cluster_id"].fillna(regions_mod.NOISE).astype(np.int64)
    out["cluster"] = out["cluster"].fillna(regions_mod.NOISE_LABEL)
    return out


def region_table(result: regions_mod.MapClusters, risk_classes: Sequence[str]) -> pd.DataFrame:
    """One row per region: id, label, LoRAs and the count of each risk class (the legend)."""
    rows = []
    for c in result.clusters:
        rows.append({"cluster_id": c.cluster_id, "region": c.label, "LoRAs": c.size, **{k: c.risk_mix.get(k, 0) for k in risk_classes}})
    return pd.DataFrame(rows, columns=["cluster_id", "region", "LoRAs", *risk_classes])


# -- services over a cached map ---------------------------------------------------------------------
_MEMO: OrderedDict[tuple[Any, ...], tuple[Any, maps.CorpusMap]] = OrderedDict()
_MEMO_LOCK = threading.Lock()
MAX_MEMO = 2  # each holds the map's fitted direction matrix (a copy: ~2 GB at a million LoRAs)


def current_map(store: Any, view: Any, config: maps.MapConfig | None = None) -> maps.CorpusMap | None:
    """:func:`carlos.viz.maps.cached_map`, remembered per store, view and config in this process:
    finding a map hashes every direction (seconds at a million LoRAs), so a rerun of the same
    view must not do it again. A new view (new data) or a model no longer in memory recomputes."""
    cfg = config or maps.MapConfig()
    key = (str(store.path), view.embedder, view.data_version, id(view), repr(cfg))
    with _MEMO_LOCK:
        hit = _MEMO.get(key)
        if hit is not None and hit[0] is view and maps.model_in_memory(hit[1].key) is hit[1].model:
            _MEMO.move_to_end(key)
            return hit[1]
    cmap = maps.cached_map(store, view, cfg)
    if cmap is not None:
        with _MEMO_LOCK:
            _MEMO[key] = (view, cmap)
            while len(_MEMO) > MAX_MEMO:
                _MEMO.popitem(last=False)
    return cmap


def regions_of(store: Any, view: Any, lora_ids: Sequence[str], config: maps.MapConfig | None = None) -> dict[str, tuple[int, str]] | None:
    """(region id, label) of each of ``lora_ids`` on the cached map (default parameters): a fitted
    LoRA's region, an upload's by where it is placed (:func:`carlos.viz.clusters.assign`); ids
    not on the map are left out. None when no such map is cached (nothing is fitted here)."""
    cmap = current_map(store, view, config)
    if cmap is None:
        return None
    result = regions_mod.corpus_clusters(store, view, cmap)
    labels = result.labels()
    wanted = set(lora_ids)
    got = result.assignment[result.assignment["lora_id"].isin(wanted)]
    out = {lid: (int(c), labels[int(c)]) for lid, c in zip(got["lora_id"], got["cluster_id"])}
    placed = cmap.frame[cmap.frame["lora_id"].isin(wanted - set(out)) & (cmap.frame["placement"] != "fitted")]
    if len(placed):
        ids = regions_mod.assign(result, cmap.frame, placed[["x", "y"]].to_numpy())
        out.update({lid: (int(c), labels.get(int(c), regions_mod.NOISE_LABEL)) for lid, c in zip(placed["lora_id"], ids)})
    return out
