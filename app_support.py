"""App-side glue for the Streamlit pages: cached store, views and shared widgets.

The only module besides the pages that imports streamlit; ``carlos/`` never does.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from carlos.catalog import CorpusView, load_view
from carlos.config import CORPUS_EMBEDDER, default_paths
from carlos.errors import CarlosError
from carlos.store import Store


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> Store:
    return Store.open(path)


def get_store() -> Store:
    """One Store object per process and path (it opens short-lived connections itself)."""
    return _open_store(str(default_paths().db_path))


def get_view(embedder: str = CORPUS_EMBEDDER) -> CorpusView:
    """The corpus view; ``load_view`` caches it per store data version."""
    return load_view(get_store(), embedder)


def require_corpus() -> CorpusView:
    """The corpus view, or an explained empty state that stops the page."""
    try:
        view = get_view()
    except CarlosError as e:
        st.info(f"The store has no corpus yet: {e}. Run `make run` (it imports the corpus) or "
                "`python -m carlos corpus import`.")  # fmt: skip
        st.stop()
    if len(view) == 0:
        st.info("The store is empty. Run `python -m carlos corpus import`.")
        st.stop()
    return view


def lora_table(frame: pd.DataFrame) -> None:
    """A sortable table of LoRAs with values, percentiles and flags."""
    cols = ["name", "version_id", "strength", "strength_pct", "consistency", "consistency_pct",
            "risk_class", "flags", "download_count", "lora_id"]  # fmt: skip
    shown = frame[[c for c in cols if c in frame.columns]].copy()
    if "flags" in shown:
        shown["flags"] = shown["flags"].map(lambda f: "; ".join(f) if len(f) else "")
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        column_config={
            "name": st.column_config.TextColumn("LoRA", width="large"),
            "version_id": st.column_config.NumberColumn("Civitai version", format="%d"),
            "strength": st.column_config.NumberColumn("Strength", format="%.2f"),
            "strength_pct": st.column_config.ProgressColumn("Str pct", format="%.0f",
                                                            min_value=0, max_value=100),
            "consistency": st.column_config.NumberColumn("Consistency", format="%.3f"),
            "consistency_pct": st.column_config.ProgressColumn("Cons pct", format="%.0f",
                                                               min_value=0, max_value=100),
            "risk_class": "Risk class",
            "download_count": st.column_config.NumberColumn("Downloads", format="%d"),
        },  # fmt: skip
    )
