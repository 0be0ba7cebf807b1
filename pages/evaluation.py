"""Evaluation: diversity of each retriever's rankings over the team's query set (and, where a
judge is available, the paper's top-3 relevance protocol)."""

from __future__ import annotations

import streamlit as st

from app.navigation import page_setup
from app.resources import get_store, require_corpus, search_service
from app.thresholds import threshold_sidebar
from app.widgets import explained
from carlos.evaluate.harness import (
    METRIC_LABELS,
    METRICS,
    EvalConfig,
    diversity_figure,
    evaluate,
    evaluation_frame,
    load_queries,
    relevance_figure,
    relevance_frame,
)
from carlos.pagemodels.corpus_pages import read_basics_only
from carlos.search.retrievers import LABELS

user = page_setup()
st.title("Evaluation: how diverse are the rankings?")
st.caption(
    "Over the team's evaluation queries, count how often each LoRA appears in a retriever's top-k: "
    "Normalized Entropy (1 = every slot a different LoRA) and Effective LoRA Count (exp of the "
    "entropy). A retriever that keeps returning the same few LoRAs scores low."
)
basics = read_basics_only(get_store())  # the page's one store read
view = require_corpus(basics)
thresholds = threshold_sidebar(view, basics.saved)
status = {s.name: s for s in search_service().status()}
usable = [r for r, s in status.items() if s.available]
with st.sidebar:
    st.subheader("Evaluation")
    chosen = st.multiselect("Retrievers", usable, default=[r for r in usable if r != "text-embedding"] or usable, format_func=LABELS.get)
    per_category = st.slider("Queries per category (0 = all)", 0, 40, 0)
    metric = st.radio("Metric", METRICS, format_func=METRIC_LABELS.get)
for name, s in status.items():
    if not s.available:
        st.caption(f"{LABELS[name]} is not evaluated here: {s.reason}")

queries = load_queries(limit=per_category or None)
st.write(
    f"**{len(queries.queries)} queries** in {len(queries.categories())} categories ({queries.id}, hash `{queries.content_hash[:12]}…`)."
)
if not chosen:
    st.info("Choose at least one retriever in the sidebar.")
    st.stop()


@st.cache_data(show_spinner=False, max_entries=8)
def run(db_version: int, retrievers: tuple[str, ...], limit: int, smax: float | None, cmin: float | None) -> dict:
    """The report as a plain dict, cached per corpus version and settings."""
    from carlos.config import Thresholds

    bar = st.progress(0.0, text="Running the retrievers over the queries…")
    config = EvalConfig(retrievers=retrievers, thresholds=Thresholds(smax, cmin), include_carlos=False)
    report = evaluate(
        get_store(),
        load_queries(limit=limit or None),
        config,
        service=search_service(),
        progress=lambda d, t: bar.progress(d / max(t, 1), text=f"{d} of {t} searches"),
    )
    bar.empty()
    return report.to_dict()


if st.button("Run evaluation", type="primary") or st.session_state.get("eval_ran"):
    st.session_state["eval_ran"] = True
    with explained("run the evaluation"):
        report = run(view.data_version, tuple(chosen), per_category, thresholds.strength_max, thresholds.consistency_min)
        frame = evaluation_frame(report)
        categories = ["all", *sorted(c for c in frame["category"].unique() if c != "all")]
        category = st.selectbox("Query category", categories)
        st.plotly_chart(diversity_figure(frame, metric, category), width="stretch")
        table = frame[(frame["category"] == "all") & (frame["metric"] == metric)].pivot(index="label", columns="span", values="value")
        st.dataframe(table.style.format("{:.3f}"), width="stretch")
        rel = report["relevance"]
        if rel["available"]:
            st.plotly_chart(relevance_figure(relevance_frame(report)), width="stretch")
            if not rel["meaningful"]:
                st.warning("The judge runs on random weights here: its relevance numbers mean nothing.")
        else:
            st.info(f"Top-3 relevance (the paper's protocol) not computed: {rel['reason']}")
else:
    st.info("Press **Run evaluation** (a few seconds for BM25 and behaviour search; the text embedding adds its model's time).")
