"""LoRA detail (``?lora=<id, Civitai version id or sha256>``): metadata, representations with
percentiles, flags, nearest neighbours by direction, local characterization, review."""

from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st

from app.navigation import page_setup
from app.resources import corpus_frame, get_store, require_corpus
from app.state import keep, url_default
from app.text import code, literal
from app.thresholds import threshold_sidebar
from app.widgets import civitai_url, decision_panel, detail_url, hidden_toggle, image_pairs, representations_table
from carlos.characterize import fingerprints, results
from carlos.core import ranking
from carlos.report import export as case_files
from carlos.review import workflow as review
from carlos.search import lookup
from carlos.viz import figures as plots
from carlos.viz import mapview
from carlos.viz import weights as weight_figures
from carlos.viz.uncertainty import interval_figure

try:
    from carlos.core.text import clean_text
except ImportError:  # textual baselines not installed: the raw text is shown as plain text
    clean_text = None

user = page_setup()
store, view = get_store(), require_corpus()
thresholds = threshold_sidebar(view)
frame = corpus_frame(view, thresholds).set_index("lora_id", drop=False)
names = dict(zip(frame["lora_id"], frame["name"]))

url_default("detail_lora", None, param="lora", parse=lambda key: lookup.resolve(store, key))
if st.session_state["detail_lora"] not in names and st.session_state["detail_lora"] is not None:
    names[st.session_state["detail_lora"]] = st.session_state["detail_lora"]  # no representation yet
lid = st.selectbox(
    "LoRA (type to search by name)",
    list(names),
    key="detail_lora",
    index=None,
    format_func=lambda i: f"{names[i]} ({i})",
    placeholder="Choose a LoRA",
)
keep("detail_lora", param="lora", fmt=lambda v: v or None)
if lid is None:
    st.info("Choose a LoRA above, or open one from the Risk, Map or Review pages.")
    st.stop()

lora = lookup.lora(store, lid)
row = frame.loc[lid] if lid in frame.index else None
st.title(literal(lora.get("name") or lid))  # creator text: shown as its characters
url = civitai_url(lora.get("model_id"), lora.get("version_id"))
st.caption(
    f"{code(lid)} · source {literal(lora.get('source'))}"
    + (f" · [Civitai model {lora['model_id']}, version {lora['version_id']}]({url})" if url else "")
    + (f" · sha256 {code(lora['sha256'])}" if lora.get("sha256") else "")
)
c = st.columns(4)
c[0].metric("NSFW", row["nsfw"] if row is not None else "unknown")
c[1].metric("Downloads", "—" if pd.isna(lora.get("download_count")) else f"{int(lora['download_count']):,}")
c[2].metric("Risk class", row["risk_class"] if row is not None else "not characterized")
c[3].metric("Review status", review.status_of(store, lid))
on_map = (mapview.regions_of(store, view, [lid]) or {}).get(lid)  # the default map's region, when a map is cached
if on_map is not None:
    st.page_link(
        "pages/map.py",
        label=f"On the map: region '{literal(on_map[1])}'" if on_map[0] >= 0 else "On the map: in no named region",
        query_params={"region": str(on_map[0])} if on_map[0] >= 0 else {},
        icon="🗺️",
    )
if lora.get("description"):
    with st.expander("Creator's description", expanded=False):
        if clean_text is not None:
            st.text(clean_text(lora["description"]))
        else:
            st.text(lora["description"])

report = lora.get("file_report")
if report:
    st.subheader("What the file declares")
    for text in report.get("contradictions") or []:
        st.warning(f"Metadata contradicts the tensors: {literal(text)}")
    st.dataframe(  # plain-text cells (st.table would render the declared values as Markdown)
        pd.DataFrame(
            {
                "field": ["format", "base model (tensors)", "base model (metadata)", "rank", "trigger words"],
                "value": [str(report.get(k)) for k in ("format", "base_family", "declared_base", "rank", "trigger_words")],
            }
        ),
        hide_index=True,
        key="declared_table",
    )
    with st.expander("All declared metadata"):
        st.json(report.get("metadata") or {})

weight_links, weight_stats = fingerprints.weight_matches(store, lid), fingerprints.weight_stats(store, lid)
if weight_links or weight_stats:
    st.subheader("Weights")
    for m in weight_links:  # "same weights as …" / "shares modules with …", with the other's review status
        st.markdown(f"{'⚠️ ' if m.status in ('flagged', 'escalated') else ''}{literal(m.text)} · [open]({detail_url(m.lora_id)})")
    if weight_stats:
        st.plotly_chart(weight_figures.block_energy_figure(weight_stats), key="weight_energy")
        st.caption(weight_figures.block_energy_caption(weight_stats))

st.subheader("Representations")
representations_table(store, lid, thresholds)
intervals = results.representation_intervals(store, lid)
if not intervals.empty:
    st.plotly_chart(interval_figure(intervals, thresholds), key="interval_bars")
    st.caption(
        "Points: the stored values; bars: 95% intervals of the full-protocol values, with the prompts of the "
        "run as independent draws (delete-one-prompt jackknife). Dashed: the thresholds in force."
    )
flags = list(row["flags"]) if row is not None else []
for f in flags:
    st.warning(f"Flag: {literal(f)}")

# --- local characterization: per-category Strength and image pairs (empty for corpus LoRAs) ---
pairs = results.pair_results(store, lid)
if not pairs.empty:
    st.subheader("Per-category Strength")
    st.plotly_chart(plots.category_strength_bar(pairs), key="cat_bar")
    thumbs = results.thumbnails(store, lid)
    if not thumbs.empty:
        st.subheader("Base / LoRA image pairs")
        image_pairs(thumbs, reveal=st.toggle("Reveal images (blurred until revealed)", key="detail_reveal"))
else:
    st.caption(
        "No per-pair data: this LoRA was not characterized on this machine (corpus LoRAs come "
        "with the authors' Direction, Strength and Consistency only)."
    )

if row is not None:
    st.subheader("Behaves like …")
    k = st.slider("Neighbours", 3, 50, 10, key="detail_k")
    res = ranking.similar(view, lid, thresholds=thresholds, top_k=k)
    hits = res.hits + (res.excluded if hidden_toggle(res.n_excluded, "neighbours", "detail_show_excl") else [])
    nb = pd.DataFrame([h.to_dict() for h in hits])
    if len(nb):
        nb["details"] = nb["lora_id"].map(detail_url)
        nb["excluded_because"] = nb["excluded_because"].map("; ".join)
        st.dataframe(
            nb[["rank", "name", "score", "strength", "consistency", "excluded_because", "details"]],
            hide_index=True,
            width="stretch",
            column_config={
                "score": st.column_config.NumberColumn("cosine", format="%.3f"),
                "details": st.column_config.LinkColumn("Details", display_text="open"),
            },
        )

st.subheader("Review")
decision_panel(store, lid, user)
history = review.history(store, lid)
if history.empty:
    st.caption("No decisions on this LoRA yet.")
else:
    st.dataframe(history[["created_at", "reviewer", "action", "status_before", "status_after", "note"]], hide_index=True, width="stretch")

# --- case file: this page's facts with provenance and a sha256, made when a button is clicked ---
st.subheader("Case file")
case_opts = {"thresholds": thresholds, "reveal": bool(st.session_state.get("detail_reveal")), "generated_by": user.name}
for col, fmt in zip(st.columns(3), case_files.download_formats()):
    col.download_button(
        f"Download case file ({fmt.upper()})",
        partial(case_files.case_bytes, store, [lid], fmt, **case_opts),
        case_files.download_name([lid], fmt),
        case_files.MIME[fmt],
        key=f"detail_case_{fmt}",
        on_click="ignore",
    )
st.caption(
    "Identification, measurements with intervals and percentiles, the thresholds in force, neighbours, review history, "
    "provenance and a sha256 over its data (`python -m carlos report --verify FILE` checks it); image pairs "
    + ("as revealed above." if case_opts["reveal"] else "blurred in the file.")
)
