"""Overview: the corpus, its provenance and every LoRA with its values and flags."""

from __future__ import annotations

import streamlit as st

from app_support import get_store, lora_table, require_corpus
from carlos.risk import corpus_stats

st.title("CARLoS — LoRAs by what they do")
st.caption("Direction (what a LoRA changes), Strength (how much: substantiality) and "
           "Consistency (how reliably: volition), measured in CLIP space.")  # fmt: skip

view = require_corpus()
stats = corpus_stats(view.frame, view.embedder)
c = st.columns(4)
c[0].metric("LoRAs", stats.loras)
c[1].metric(f"Too strong (Str > {stats.strength_max:g})", stats.over_strength)
c[2].metric(f"Too unstable (Cons < {stats.consistency_min:g})", stats.under_consistency)
c[3].metric("Retained for retrieval", stats.retained)

for imp in get_store().imports():
    st.caption(f"Source: {imp['source']} (sha256 {imp['file_sha256'][:12]}…, {imp['rows']} rows, "
               f"imported {imp['imported_at']:%Y-%m-%d %H:%M}); space {view.embedder}; "
               "representations by the CARLoS authors, Apache-2.0.")  # fmt: skip

st.subheader("All LoRAs")
lora_table(view.annotated().sort_values("strength", ascending=False))
