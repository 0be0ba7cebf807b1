"""Cached resources: one Store, search service and capability check per process, and the corpus view."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from carlos.config import CORPUS_EMBEDDER, Thresholds, default_paths
from carlos.core.risk import RiskPolicy, annotate, nsfw_label
from carlos.core.view import CorpusView
from carlos.errors import CarlosError
from carlos.review import workflow as review
from carlos.search.capabilities import Capabilities, detect
from carlos.search.views import corpus_view
from carlos.store.store import Store


@st.cache_resource(show_spinner=False)
def open_store(path: str) -> Store:
    return Store.open(path)


def get_store() -> Store:
    """One Store object per process and path (it opens short-lived connections itself)."""
    return open_store(str(default_paths().db_path))


def get_view(embedder: str = CORPUS_EMBEDDER) -> CorpusView:
    """The corpus view; ``load_view`` caches it per store data version."""
    return corpus_view(get_store(), embedder)


def require_corpus() -> CorpusView:
    """The corpus view, or an explained empty state that stops the page."""
    try:
        view = get_view()
    except CarlosError as e:
        st.info(f"The store has no corpus yet: {e}. Run `make run` (it imports the corpus) or `python -m carlos corpus import`.")
        st.stop()
    if len(view) == 0:
        st.info("The store is empty. Run `python -m carlos corpus import`.")
        st.stop()
    return view


def corpus_frame(view: CorpusView, thresholds: Thresholds) -> pd.DataFrame:
    """The view annotated under ``thresholds`` (risk class, percentiles, flags) with each
    LoRA's review status and claim holder, and its NSFW label. The annotation is remembered
    per view and thresholds (it costs ~2 s per 100k LoRAs); the review status is read each time."""
    df = _annotated(view, thresholds)
    status = review.status_frame(get_store(), view)[["lora_id", "status", "reviewer", "decided_at", "claimed_by"]]
    out = df.merge(status, on="lora_id", how="left")  # a new frame: the remembered one is never modified
    out.attrs.update(df.attrs)  # the review-region cuts
    return out


_ANNOTATED: dict[tuple[Any, ...], tuple[CorpusView, pd.DataFrame]] = {}
_ANNOTATED_MAX = 4


def _annotated(view: CorpusView, thresholds: Thresholds) -> pd.DataFrame:
    key = (view.embedder, view.data_version, id(view), thresholds)
    hit = _ANNOTATED.get(key)
    if hit is not None and hit[0] is view:  # the same view object, not one that reused a freed id
        return hit[1]
    df = annotate(view.frame, RiskPolicy(thresholds=thresholds))
    df["nsfw"] = df["nsfw_level"].map(lambda v: nsfw_label(None if pd.isna(v) else v))
    while len(_ANNOTATED) >= _ANNOTATED_MAX:
        _ANNOTATED.pop(next(iter(_ANNOTATED)))
    _ANNOTATED[key] = (view, df)
    return df


@st.cache_resource(show_spinner=False)
def _search_service(path: str) -> Any:
    from carlos.search.service import SearchService

    return SearchService(open_store(path))


def search_service() -> Any:
    """One SearchService per store (it holds CLIP, the prefix cache and the text models)."""
    return _search_service(str(default_paths().db_path))


@st.cache_data(ttl=60, show_spinner=False)
def capabilities() -> Capabilities:
    """What works on this machine right now (re-checked at most once a minute)."""
    return detect()
