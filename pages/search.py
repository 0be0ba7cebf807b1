"""Search: find LoRAs that do what the query says; compare behaviour with text side by side."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.navigation import page_setup
from app.resources import get_store, require_corpus, search_service
from app.state import SEARCH_KEY, current, current_index, keep, url_default
from app.text import literal
from app.thresholds import threshold_sidebar
from app.widgets import detail_url, explained, hidden_toggle
from carlos.core.untrusted import csv_bytes
from carlos.pagemodels.corpus_pages import read_basics_only, read_regions
from carlos.pagemodels.search import search as search_results
from carlos.search.retrievers import LABELS, RETRIEVERS, SearchConfig

user = page_setup()
st.title("Search LoRAs by what they do")
basics = read_basics_only(get_store())  # the page's one store read
view = require_corpus(basics)
thresholds = threshold_sidebar(view, basics.saved)
service = search_service()
status = {s.name: s for s in service.status()}


def label(name: str) -> str:
    s = status[name]
    return LABELS[name] if s.available else f"{LABELS[name]} — unavailable: {s.reason}"


url_default("q", "", param="q")
url_default("retriever", "carlos" if status["carlos"].available else "behaviour", param="r")
url_default("top_k", 10, param="k", parse=lambda t: max(1, min(100, int(t))))
url_default("compare", False, param="cmp", parse=lambda t: t == "1")
with st.sidebar:
    st.subheader("Search")
    retriever = st.radio("Retriever", RETRIEVERS, current_index(RETRIEVERS, "retriever"), key="retriever", format_func=label)
    top_k = st.slider("Results", 1, 100, current("top_k"), key="top_k")
    compare = st.toggle("Compare with a textual baseline", current("compare"), key="compare")
    baseline = st.selectbox("Baseline", ["bm25", "text-embedding"], format_func=LABELS.get, disabled=not compare)
keep("retriever", param="r")
keep("top_k", param="k")
keep("compare", param="cmp", fmt=lambda v: "1" if v else None)

query = st.text_input(
    "What should the LoRA do?", current("q"), key="q", placeholder="e.g. pixel art · snowfall, cold winter scene · ukiyo-e woodblock print"
)
keep("q", param="q", fmt=lambda v: v.strip() or None)
if not status[retriever].available:
    st.warning(
        f"{LABELS[retriever]} is unavailable here: {status[retriever].reason}. "
        "Pick behaviour search (text-seeded, works without CLIP weights) or a textual baseline."
    )
    st.stop()
if not query.strip():
    st.info(
        "Type a query. **CARLoS** turns it into a direction in CLIP space and ranks LoRAs by what "
        "their images change; **behaviour search** does the same without CLIP, seeding the direction "
        "with LoRAs whose descriptions match; the textual baselines only read names and descriptions."
    )
    st.stop()


def run(name: str):
    with st.spinner(f"{LABELS[name]}…"):
        return search_results(service, view, query, SearchConfig(retriever=name, top_k=top_k, thresholds=thresholds))


def table(result, only_here: set[str] | None = None, key: str = "") -> None:
    for note in result.notes:
        st.caption(f"ℹ️ {literal(note)}")  # notes quote the query, which a shared link sets
    rows = pd.DataFrame([h.to_dict() for h in result.hits])
    if rows.empty:
        st.info("No LoRA passed the thresholds for this query.")
    else:
        rows["open"] = rows["lora_id"].map(detail_url)
        rows["flags"] = rows["flags"].map("; ".join)
        if only_here is not None:
            rows["name"] = [("★ " if lid in only_here else "") + n for lid, n in zip(rows["lora_id"], rows["name"])]
        # score first and the name at medium width: side by side at 1440 px both tables show rank, score, name and link
        on_map = read_regions(get_store(), view, rows["lora_id"].tolist())  # None: no map cached
        rows["region"] = rows["lora_id"].map(lambda i: on_map[i][1] if i in on_map else "") if on_map is not None else None
        shown = ["rank", "score", "name", "open", *(["region"] if on_map is not None else [])]
        shown += ["strength", "consistency", "strength_pct", "consistency_pct", "flags"]
        st.dataframe(
            rows[shown],
            hide_index=True,
            width="stretch",
            key=f"tbl_{key}",
            column_config={
                "rank": st.column_config.NumberColumn("rank", width=45),
                "score": st.column_config.NumberColumn("Score", format="%.3f", width=70),
                "name": st.column_config.TextColumn("LoRA", width="medium" if only_here is not None else "large"),
                "open": st.column_config.LinkColumn("Detail", display_text="open", width=60),
                "region": st.column_config.TextColumn("Map region", help="its region on the map of directions (Map page)"),
                "strength": st.column_config.NumberColumn("Strength", format="%.2f"),
                "strength_pct": st.column_config.NumberColumn("Str pct", format="%.0f"),
                "consistency": st.column_config.NumberColumn("Consistency", format="%.3f"),
                "consistency_pct": st.column_config.NumberColumn("Cons pct", format="%.0f"),
            },
        )
        export = rows[["rank", "lora_id", "name", "score", "strength", "strength_pct", "consistency", "consistency_pct", "flags"]]
        if on_map is not None:
            export = export.assign(region=rows["region"])
        st.download_button(
            "Download these results (CSV)", csv_bytes(export), "carlos-search.csv", "text/csv", key=f"csv_{key}", on_click="ignore"
        )
    if hidden_toggle(result.n_excluded, "LoRAs", key=f"hidden_{key}", by="the thresholds"):
        ex = pd.DataFrame([h.to_dict() for h in result.excluded])
        if not ex.empty:
            ex["why"] = ex["excluded_because"].map("; ".join)
            st.dataframe(ex[["rank", "name", "score", "strength", "consistency", "why"]], hide_index=True, width="stretch")


with explained("search"):
    main = run(retriever)
    st.session_state[SEARCH_KEY] = {
        "query": query,
        "retriever": retriever,
        "hits": [h.lora_id for h in main.hits],
        "scores": {h.lora_id: h.score for h in main.hits},
    }
    if not compare:
        st.subheader(f"{LABELS[retriever]}: {len(main.hits)} results")
        table(main, key="main")
    else:
        other = run(baseline)
        a, b = {h.lora_id for h in main.hits}, {h.lora_id for h in other.hits}
        st.caption(
            f"★ marks what only one side finds: {len(a - b)} only by {retriever}, {len(b - a)} only by {baseline}, {len(a & b)} by both."
        )
        left, right = st.columns(2)
        with left:
            st.subheader(LABELS[retriever])
            table(main, a - b, key="left")
        with right:
            st.subheader(LABELS[baseline])
            table(other, b - a, key="right")
    st.page_link("pages/map.py", label="See the results on the map", icon="🗺️")
