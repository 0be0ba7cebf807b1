"""Overview: the corpus and its provenance, what works on this machine, the saved
thresholds, counts by risk class, recent review activity and every LoRA."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.navigation import page_setup
from app.resources import capabilities, get_store, require_corpus
from app.thresholds import fmt_threshold
from app.widgets import lora_table
from carlos.core.risk import RISK_CLASSES, RiskPolicy, corpus_stats
from carlos.pagemodels.corpus_pages import read_overview

page_setup()
st.title("CARLoS — LoRAs by what they do")
st.caption(
    "Direction (what a LoRA changes), Strength (how much: substantiality) and Consistency (how reliably: volition), measured in CLIP space."
)

data = read_overview(get_store())  # the page's one store read
view = require_corpus(data.basics)
thresholds = data.basics.saved
stats = corpus_stats(view.frame, view.embedder, RiskPolicy(thresholds=thresholds))

c = st.columns(4)
c[0].metric("LoRAs", stats.loras)
c[1].metric(f"Too strong (Str > {fmt_threshold(stats.strength_max)})", stats.over_strength)
c[2].metric(f"Too unstable (Cons < {fmt_threshold(stats.consistency_min)})", stats.under_consistency)
c[3].metric("Retained for retrieval", stats.retained)
for imp in data.imports:
    st.caption(
        f"Source: {imp['source']} (sha256 {imp['file_sha256'][:12]}…, {imp['rows']} rows, "
        f"imported {imp['imported_at']:%Y-%m-%d %H:%M}); space {view.embedder}; "
        "representations by the CARLoS authors, Apache-2.0."
    )

left, right = st.columns(2)
with left:
    st.subheader("Available right now")
    caps = capabilities()
    rows = [caps.clip_weights, caps.gpu, caps.text_model, *caps.retrievers.values()]
    st.dataframe(
        pd.DataFrame(
            {"": ["✅" if r.available else "❌" for r in rows], "what": [r.name for r in rows], "detail": [r.detail for r in rows]}
        ),
        hide_index=True,
        width="stretch",
    )
with right:
    st.subheader("Thresholds and risk classes")
    hist = data.saved_by
    who = (
        "the paper's defaults (no reviewer has saved any)"
        if hist.empty
        else f"set by {hist.iloc[0]['reviewer']} on {hist.iloc[0]['created_at']:%Y-%m-%d %H:%M}"
    )
    st.markdown(f"Strength ≤ **{fmt_threshold(stats.strength_max)}**, Consistency ≥ **{fmt_threshold(stats.consistency_min)}** — {who}.")
    cls = st.columns(len(RISK_CLASSES))
    for col, name in zip(cls, RISK_CLASSES):
        col.metric(name, stats.risk_classes[name])
    st.caption("Review = retained, and in the upper quartile of both Strength and Consistency.")

st.subheader("Recent review activity")
recent = data.recent
if recent.empty:
    st.caption("No review decisions yet. Flag LoRAs on the Risk page or decide on a LoRA's detail page.")
else:
    st.dataframe(
        recent[["created_at", "reviewer", "name", "action", "status_before", "status_after", "note"]], hide_index=True, width="stretch"
    )

st.subheader("All LoRAs")
lora_table(data.frame(thresholds).sort_values("strength", ascending=False))
