"""LoRA detail (``?lora=<id, Civitai version id or sha256>``): metadata, representations with
percentiles, flags, nearest neighbours by direction, local characterization, review."""

from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st

from app.navigation import page_setup
from app.resources import get_store, require_corpus
from app.state import keep, url_candidate, url_default
from app.text import code, literal
from app.thresholds import threshold_sidebar
from app.widgets import civitai_url, decision_panel, detail_url, hidden_toggle, image_pairs, representations_table
from carlos.pagemodels.common import names as page_names
from carlos.pagemodels.detail import build_detail, read_detail
from carlos.report import export as case_files
from carlos.viz import figures as plots
from carlos.viz import weights as weight_figures
from carlos.viz.uncertainty import interval_figure

try:
    from carlos.core.text import clean_text
except ImportError:  # textual baselines not installed: the raw text is shown as plain text
    clean_text = None

user = page_setup()
store = get_store()
data = read_detail(store, url_candidate("detail_lora", "lora"))  # the page's one store read
view = require_corpus(data.basics)
names = page_names(view)
url_default("detail_lora", None, param="lora", parse=data.resolve)
lid = st.session_state["detail_lora"]
if lid is not None and lid != data.lora_id:  # a bad link fell back to the LoRA kept from another page
    data = read_detail(store, lid)
thresholds = threshold_sidebar(view, data.basics.saved)
options = list(names) if lid is None or lid in names else [*names, lid]  # an upload without a representation
lid = st.selectbox(
    "LoRA (type to search by name)",
    options,
    key="detail_lora",
    index=options.index(lid) if lid is not None else None,  # see app.state.url_default: a late mount keeps the LoRA
    format_func=lambda i: f"{names.get(i, i)} ({i})",
    placeholder="Choose a LoRA",
)
keep("detail_lora", param="lora", fmt=lambda v: v or None)
if lid is None:
    st.info("Choose a LoRA above, or open one from the Risk, Map or Review pages.")
    st.stop()
if lid != data.lora_id:  # chosen in the box on this run
    data = read_detail(store, lid)

model = build_detail(data, thresholds)
lora, row = data.lora, model.row
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
c[3].metric("Review status", data.status)
on_map = data.region  # the default map's region, when a map is cached
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

if data.weight_links or data.weight_stats:
    st.subheader("Weights")
    for m in data.weight_links:  # "same weights as …" / "shares modules with …", with the other's review status
        st.markdown(f"{'⚠️ ' if m.status in ('flagged', 'escalated') else ''}{literal(m.text)} · [open]({detail_url(m.lora_id)})")
    if data.weight_stats:
        st.plotly_chart(weight_figures.block_energy_figure(data.weight_stats), key="weight_energy")
        st.caption(weight_figures.block_energy_caption(data.weight_stats))

st.subheader("Representations")
representations_table(model.representations, model.comparability_warnings)
if not model.intervals.empty:
    st.plotly_chart(interval_figure(model.intervals, thresholds), key="interval_bars")
    st.caption(
        "Points: the stored values; bars: 95% intervals of the full-protocol values, with the prompts of the "
        "run as independent draws (delete-one-prompt jackknife). Dashed: the thresholds in force."
    )
for f in model.flags:
    st.warning(f"Flag: {literal(f)}")

# --- local characterization: per-category Strength and image pairs (empty for corpus LoRAs) ---
if not data.pairs.empty:
    st.subheader("Per-category Strength")
    st.plotly_chart(plots.category_strength_bar(data.pairs), key="cat_bar")
    if not data.thumbs.empty:
        st.subheader("Base / LoRA image pairs")

        @st.fragment
        def pairs_panel() -> None:
            """The reveal toggle reruns only the image grid."""
            image_pairs(data.thumbs, reveal=st.toggle("Reveal images (blurred until revealed)", key="detail_reveal"))

        pairs_panel()
else:
    st.caption(
        "No per-pair data: this LoRA was not characterized on this machine (corpus LoRAs come "
        "with the authors' Direction, Strength and Consistency only)."
    )


@st.fragment
def neighbours_panel() -> None:
    """The neighbour count and the excluded-neighbours toggle rerun only this part (no store read)."""
    st.subheader("Behaves like …")
    k = st.slider("Neighbours", 3, 50, 10, key="detail_k")
    res = model.neighbours(k)
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


if row is not None:
    neighbours_panel()

st.subheader("Review")
decision_panel(store, lid, user, data.claim_holder)
if data.history.empty:
    st.caption("No decisions on this LoRA yet.")
else:
    st.dataframe(
        data.history[["created_at", "reviewer", "action", "status_before", "status_after", "note"]], hide_index=True, width="stretch"
    )

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
