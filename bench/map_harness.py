"""Harness of ``python -m carlos bench map``: one map renderer over a synthetic map's points.

Run by the benchmark as ``streamlit run bench/map_harness.py`` with ``CARLOS_MAP_POINTS`` (a
parquet of lora_id, name, x, y, risk_class written by :mod:`carlos.bench.map_data`) and
``CARLOS_MAP_RENDERER``:

* ``plotly-all``: every point in one Plotly ``scattergl`` figure (no server-side aggregation),
  drawn by the same figure builder as the Map page; a box selection lists the LoRAs inside it.
* ``atlas``: Apple's Embedding Atlas Streamlit component (``pip install --no-deps
  embedding-atlas``). Its selection comes back as a SQL predicate that this harness runs on the
  points with DuckDB: a benchmark only, since the predicate is text the browser sends.

Not part of the product: the dashboard's map is ``pages/map.py``.
"""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from carlos.core.untrusted import markdown_literal
from carlos.viz import figures, mapview

st.set_page_config(page_title="map harness", layout="wide")


@st.cache_data(show_spinner=False)
def points(path: str) -> pd.DataFrame:
    return pd.read_parquet(path)


df = points(os.environ["CARLOS_MAP_POINTS"])
renderer = os.environ.get("CARLOS_MAP_RENDERER", "plotly-all")
st.title(f"{renderer}: {len(df):,} LoRAs")


def listed(rows: pd.DataFrame) -> None:
    st.subheader(f"Selected: {len(rows):,}")
    for lid, name in zip(rows["lora_id"].iloc[:20], rows["name"].iloc[:20]):
        st.markdown(f"[{markdown_literal(name)}](detail?lora={lid})")


if renderer == "plotly-all":
    fig = figures.map_scatter(df, webgl=True)
    event = st.plotly_chart(fig, key="chart", on_select="rerun", selection_mode=("points", "box", "lasso"))
    sel = mapview.parse_selection(event.selection if event else None)
    if not sel.empty:
        listed(sel.members(df))
elif renderer == "atlas":
    import duckdb
    from embedding_atlas.streamlit import embedding_atlas

    value = embedding_atlas(df, x="x", y="y", text="name", row_id="lora_id", labels="automatic", key="atlas")
    predicate = (value or {}).get("predicate")
    if predicate:
        listed(duckdb.query_df(df, "points", "SELECT lora_id, name FROM points WHERE " + predicate).df())
else:
    st.error(f"unknown renderer {renderer!r}")
