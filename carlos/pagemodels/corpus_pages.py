"""The page models of the corpus-wide pages: overview, risk, map, review, search and evaluation.

Each ``read_<page>`` runs every store read of one render in one session; the ``<page>_frame``
helpers derive the shown frames outside it (the annotated frame is remembered per data version
and thresholds; review state is merged per render, since a decision does not bump the version).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from carlos.characterize import results
from carlos.config import Thresholds
from carlos.core.risk import CorpusStats, RiskPolicy, corpus_stats
from carlos.core.view import CorpusView
from carlos.data.corpus import import_history
from carlos.errors import CarlosError
from carlos.pagemodels.common import Basics, Memo, annotated, cached_read, read_basics, view_key, with_review
from carlos.review import weight_groups
from carlos.review import workflow as review
from carlos.store.store import Store
from carlos.viz import clusters, figures, maps, mapview

#: What the corpus-wide pages read: LoRAs, representations, fingerprints (data) and review state, never
#: the jobs a worker is writing (its pair results and heartbeats leave these pages' reads cached).
CORPUS_AREAS = ("data", "review")
#: Where a cached map lives (the map cache) and what it is of.
MAP_AREAS = ("data", "caches")


@dataclass(frozen=True)
class CorpusPageData:
    """What every corpus-wide page reads: the basics and the review state of every LoRA."""

    basics: Basics
    statuses: pd.DataFrame  # store.review.current_statuses(): status, last decision, claim holder per LoRA

    def frame(self, thresholds: Thresholds) -> pd.DataFrame:
        """The annotated view under ``thresholds`` with review status and claim holder (a new frame)."""
        assert self.basics.view is not None
        return with_review(annotated(self.basics.view, thresholds), self.statuses)


@dataclass(frozen=True)
class OverviewData(CorpusPageData):
    imports: list[dict[str, Any]] = field(default_factory=list)  # corpus imports, oldest first
    saved_by: pd.DataFrame = field(default_factory=pd.DataFrame)  # the latest saved thresholds' record (0 or 1 row)
    recent: pd.DataFrame = field(default_factory=pd.DataFrame)  # the ten latest decisions


@dataclass(frozen=True)
class RiskData(CorpusPageData):
    uncertainties: dict[int, Any] = field(default_factory=dict)  # rep_id -> stored intervals of the uploads
    threshold_history: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass(frozen=True)
class ReviewData(CorpusPageData):
    weight_groups: pd.DataFrame = field(default_factory=pd.DataFrame)  # weight-space copies (review.weight_groups)
    log: pd.DataFrame = field(default_factory=pd.DataFrame)  # the whole audit log, newest first


@dataclass(frozen=True)
class MapData(CorpusPageData):
    config: maps.MapConfig = field(default_factory=maps.MapConfig)  # the UMAP parameters read
    map: maps.CorpusMap | None = None  # the cached map of the asked parameters; None: none cached (or map_error)
    regions: clusters.MapClusters | None = None
    map_error: str | None = None  # why the map or its regions could not be loaded


def _session(store: Store) -> tuple[Basics, pd.DataFrame]:
    return read_basics(store), store.review.current_statuses()


def read_overview(store: Store) -> OverviewData:
    """Overview: imports, the saved thresholds' record and the ten latest decisions."""
    return cached_read(store, ("overview",), lambda: _overview(store), CORPUS_AREAS)


def _overview(store: Store) -> OverviewData:
    with store.reading():
        basics, statuses = _session(store)
        return OverviewData(
            basics,
            statuses,
            imports=import_history(store),
            saved_by=review.threshold_history(store, limit=1),
            recent=store.review.decisions(limit=10),
        )


def read_risk(store: Store) -> RiskData:
    """Risk: the uploads' stored intervals and the threshold history."""
    return cached_read(store, ("risk",), lambda: _risk(store), CORPUS_AREAS)


@dataclass(frozen=True)
class RiskModel:
    """The risk page under one set of thresholds, shared by every session showing it (copy
    ``frame`` before changing it): the LoRAs with review status, 95 % intervals and confidence of
    the uploads characterized here; the region counts; the review region's cuts."""

    frame: pd.DataFrame
    intervals: pd.DataFrame
    stats: CorpusStats
    cuts: tuple[float, float]


#: Risk models and figures per (page data, thresholds[, axes, colour]): ~45 % of a risk render was
#: building them again (py-spy ``--gil``, 4 sessions on the real server). A value holds the page data it
#: was made from, so the data's id in its key names no other object while the entry lives.
_RISK_MODELS: Memo = Memo(32, single_flight=True)
_RISK_FIGURES: Memo = Memo(64, single_flight=True)


def build_risk(data: RiskData, thresholds: Thresholds) -> RiskModel:
    """The risk page's frame, intervals and counts under ``thresholds`` (see :class:`RiskModel`)."""
    return _RISK_MODELS.get((id(data), thresholds), lambda: (data, _build_risk(data, thresholds)))[1]


def _build_risk(data: RiskData, thresholds: Thresholds) -> RiskModel:
    assert data.basics.view is not None
    frame = data.frame(thresholds)
    cuts = (frame.attrs["review_strength_min"], frame.attrs["review_consistency_min"])
    intervals = results.interval_frame(frame, data.uncertainties, thresholds, cuts)
    frame = frame.merge(intervals, on="lora_id", how="left")
    frame["risk_confidence"] = frame["risk_confidence"].fillna(results.NO_INTERVAL)
    stats = corpus_stats(data.basics.view.frame, data.basics.view.embedder, RiskPolicy(thresholds=thresholds))
    return RiskModel(frame, intervals, stats, cuts)


def risk_figure(model: RiskModel, thresholds: Thresholds, axes: str, colour: str) -> Any:
    """The scatter of ``model`` (remembered; a figure coloured by a session's own search is not)."""
    return _RISK_FIGURES.get(
        (id(model), thresholds, axes, colour),
        lambda: (model, figures.risk_scatter(model.frame, thresholds, axes=axes, colour=colour, review_cuts=model.cuts)),
    )[1]


def _risk(store: Store) -> RiskData:
    with store.reading():
        basics, statuses = _session(store)
        stored = results.stored_uncertainties(store, basics.view.frame) if basics.view is not None else {}
        return RiskData(basics, statuses, uncertainties=stored, threshold_history=review.threshold_history(store))


def read_review(store: Store) -> ReviewData:
    """Review queue: weight-space copies and the whole audit log."""
    return cached_read(store, ("review",), lambda: _review(store), CORPUS_AREAS)


def _review(store: Store) -> ReviewData:
    with store.reading():
        basics, statuses = _session(store)
        return ReviewData(basics, statuses, weight_groups=weight_groups.weight_groups(store), log=store.review.decisions())


def read_map(store: Store, config: maps.MapConfig) -> MapData:
    """Map: the basics and review state (one read per store state), and the cached map of
    ``config`` with its regions, which :func:`carlos.viz.mapview.current_map` remembers per view
    and checks against the models in memory (a restarted process places uploads by the fallback)."""
    base = cached_read(store, ("map",), lambda: _map_base(store), CORPUS_AREAS)
    view = base.basics.view
    if view is None:
        return replace(base, config=config)
    try:
        # "no map of these parameters" is a fact of the store's state: remembered per change token, so a
        # visitor's rerun does not look again (a fit anywhere writes, which changes the token)
        absent = cached_read(
            store, ("no map", *view_key(view), config), lambda: mapview.current_map(store, view, config) is None, MAP_AREAS
        )
        cmap = None if absent else mapview.current_map(store, view, config)
        regions = clusters.corpus_clusters(store, view, cmap) if cmap is not None else None
    except CarlosError as e:
        return replace(base, config=config, map_error=str(e))
    return replace(base, config=config, map=cmap, regions=regions)


def _map_base(store: Store) -> MapData:
    with store.reading():
        return MapData(*_session(store))


def read_regions(store: Store, view: CorpusView, lora_ids: Sequence[str]) -> dict[str, tuple[int, str]] | None:
    """(region id, label) on the default map of each of ``lora_ids`` (search results), None when no
    map is cached; looked up once per store state (an absent map too)."""
    ids = tuple(lora_ids)
    return cached_read(store, ("regions", *view_key(view), ids), lambda: mapview.regions_of(store, view, ids), MAP_AREAS)


def read_basics_only(store: Store) -> Basics:
    """Search and evaluation: the view and the saved thresholds (their results come from services)."""
    return cached_read(store, ("basics",), lambda: _basics_only(store), CORPUS_AREAS)


def _basics_only(store: Store) -> Basics:
    with store.reading():
        return read_basics(store)
