"""Map: UMAP (cosine) of the LoRA directions, fitted once per corpus and parameters and
cached in the store; colour by values, risk, review status or a search's score."""

from __future__ import annotations

import streamlit as st

from app.navigation import DETAIL_PAGE, page_setup
from app.resources import corpus_frame, get_store, require_corpus
from app.state import choice, colour_choices, ids_param, keep, last_search, parse_ids, url_default
from app.thresholds import threshold_sidebar
from app.widgets import explained
from carlos.viz import figures as plots
from carlos.viz import maps

page_setup()
st.title("Map of directions")
st.caption(
    "Each point is a LoRA placed by UMAP (cosine) of its Direction: LoRAs that change images "
    "the same way sit together, whatever their names say."
)

store, view = get_store(), require_corpus()
thresholds = threshold_sidebar(view)
search = last_search()
colours = colour_choices(["risk class", "Strength", "Consistency", "review status", "NSFW level"])
frame = corpus_frame(view, thresholds)
names = dict(zip(frame["lora_id"], frame["name"]))
with st.sidebar:
    url_default("map_colour", "risk class", param="colour", parse=choice(colours))
    colour = st.selectbox("Colour by", colours, key="map_colour")
    keep("map_colour", param="colour", fmt=lambda v: None if v == "risk class" else v)
    url_default("map_hl", list(search.get("hits", [])), param="hl", parse=lambda t: [i for i in parse_ids(t) if i in names])
    highlight = st.multiselect("Highlight LoRAs", list(names), key="map_hl", format_func=lambda i: names[i])
    keep("map_hl", param="hl", fmt=ids_param)
    with st.expander("UMAP parameters"):
        url_default("map_nn", 15, param="nn", parse=lambda t: min(max(int(t), 2), 100))
        nn = st.slider("Neighbours", 2, 100, key="map_nn")
        keep("map_nn", param="nn", fmt=lambda v: None if v == 15 else str(v))
        url_default("map_md", 0.1, param="md", parse=lambda t: min(max(round(float(t), 2), 0.0), 0.99))
        md = st.slider("Minimum distance", 0.0, 0.99, step=0.01, key="map_md")
        keep("map_md", param="md", fmt=lambda v: None if v == 0.1 else f"{v:g}")
        url_default("map_ep", 0, param="ep", parse=lambda t: min(max(int(t), 0), 2000))
        ep = st.number_input("Epochs (0: UMAP's default)", 0, 2000, step=50, key="map_ep")
        keep("map_ep", param="ep", fmt=lambda v: str(v) if v else None)

cmap = None
with explained("compute the map"):
    config = maps.MapConfig(n_neighbors=int(nn), min_dist=float(md), n_epochs=int(ep) or None)
    with st.spinner(f"Computing the map of {len(view)} directions (UMAP; once per corpus and parameters, then cached in the store)…"):
        cmap = maps.corpus_map(store, view, config)
if cmap is None:
    st.stop()

frame = frame.merge(cmap.frame, on="lora_id", how="left")
if colour == "search score":
    frame["score"] = frame["lora_id"].map(search["scores"])
fig = plots.map_scatter(frame, colour=colour, highlight_ids=highlight)
event = st.plotly_chart(fig, key="map_chart", on_select="rerun", selection_mode=("points", "box", "lasso"))
n_placed = int((cmap.frame["placement"] != "fitted").sum())
st.caption(
    f"Fitted on {len(cmap.fit_ids)} LoRAs ({'computed now' if cmap.fitted_now else 'loaded from the store'}"
    f", key `{cmap.key}`). New points (uploads, query directions) are placed "
    + (
        "with the fitted UMAP model."
        if cmap.can_transform
        else "by the fallback — a similarity-weighted average of the map positions of their nearest LoRAs "
        "by cosine — because the fitted model is not in memory since the app restarted; their "
        "positions are approximate."
    )
    + (f" {n_placed} uploaded LoRA(s) shown as diamonds." if n_placed else "")
)

picked = plots.selected_ids(event.selection if event else None)
if picked:
    st.subheader(f"Selected: {len(picked)}")
    shown = picked if len(picked) <= 20 or st.toggle(f"Show all {len(picked)} (20 listed)") else picked[:20]
    for lid in shown:
        st.page_link(DETAIL_PAGE, label=f"{names.get(lid, lid)} — details", query_params={"lora": lid})
else:
    st.caption("Click a point, or box/lasso-select several, to list them with links to their details.")
