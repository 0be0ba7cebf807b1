"""Cached resources: one Store, search service and capability check per process; the corpus guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from carlos.config import default_paths
from carlos.core.view import CorpusView
from carlos.files.blobs import Blobs, open_blobs
from carlos.pagemodels import Basics
from carlos.pagemodels.corpus_pages import read_basics_only
from carlos.search.capabilities import Capabilities, detect
from carlos.store.store import Store


@st.cache_resource(show_spinner=False)
def open_store(path: str) -> Store:
    return Store.open(path)


def get_store() -> Store:
    """One Store object per process and path (it opens short-lived connections itself)."""
    return open_store(default_paths().store)


@st.cache_resource(show_spinner=False)
def _blob_store(target: str | None, cache: str) -> Blobs:
    return open_blobs(target, cache=Path(cache))


def blob_store() -> Blobs:
    """Where uploads are kept for the workers: ``CARLOS_BLOBS`` / ``[carlos] blobs`` (an ``s3://`` URL:
    workers on other machines fetch them), else the store's ``cache/uploads`` folder."""
    return _blob_store(default_paths().blobs, str(get_store().path.parent / "cache"))


def require_corpus(basics: Basics | None = None) -> CorpusView:
    """The corpus view of a page model's ``basics`` (read here when not given), or an explained
    empty state that stops the page."""
    if basics is None:
        basics = read_basics_only(get_store())
    if basics.view is None:
        st.info(f"No corpus to show: {basics.missing}. Run `make run` (it imports the corpus) or `python -m carlos corpus import`.")
        st.stop()
    return basics.view


@st.cache_resource(show_spinner=False)
def _search_service(path: str) -> Any:
    from carlos.search.service import SearchService

    return SearchService(open_store(path))


def search_service() -> Any:
    """One SearchService per store (it holds CLIP, the prefix cache and the text models)."""
    return _search_service(default_paths().store)


@st.cache_data(ttl=60, show_spinner=False)
def capabilities() -> Capabilities:
    """What works on this machine right now (re-checked at most once a minute)."""
    return detect()
