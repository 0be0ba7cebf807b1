"""Map: UMAP (cosine) of the LoRA directions, fitted once per corpus and parameters (at corpus
import, or by a reviewer's click) and cached in the store; colour by values, risk, review status
or a search's score. A visitor never starts a fit."""

from __future__ import annotations

import streamlit as st

from app.access import write_note
from app.navigation import DETAIL_PAGE, page_setup
from app.resources import get_store, require_corpus
from app.state import choice, colour_choices, current, current_index, ids_param, keep, last_search, parse_ids, url_default
from app.text import literal
from app.thresholds import threshold_sidebar
from app.widgets import explained
from carlos.pagemodels.common import names as page_names
from carlos.pagemodels.corpus_pages import read_map
from carlos.viz import clusters, map_layers, maps, mapview
from carlos.viz import figures as plots

user = page_setup()
st.title("Map of directions")
st.caption(
    "Each point is a LoRA placed by UMAP (cosine) of its Direction: LoRAs that change images "
    "the same way sit together, whatever their names say."
)


def state_config() -> maps.MapConfig:
    """The UMAP parameters of this session's widgets (the defaults before they are drawn)."""
    ss = st.session_state
    return maps.MapConfig(
        n_neighbors=int(ss.get("map_nn", 15)), min_dist=float(ss.get("map_md", 0.1)), n_epochs=int(ss.get("map_ep", 0)) or None
    )


store = get_store()
data = read_map(store, state_config())  # the page's one store read (a link with other parameters reads once more)
view = require_corpus(data.basics)
thresholds = threshold_sidebar(view, data.basics.saved)
search = last_search()
colours = colour_choices(["risk class", "Strength", "Consistency", "review status", "NSFW level"])
frame = data.frame(thresholds)
names = page_names(view)
with st.sidebar:
    url_default("map_colour", "risk class", param="colour", parse=choice(colours))
    colour = st.selectbox("Colour by", colours, current_index(colours, "map_colour"), key="map_colour")
    keep("map_colour", param="colour", fmt=lambda v: None if v == "risk class" else v)
    url_default("map_hl", list(search.get("hits", [])), param="hl", parse=lambda t: [i for i in parse_ids(t) if i in names])
    # every name is an option up to MANY_OPTIONS LoRAs; above, the search hits and the link's ids
    many = len(names) > mapview.MANY_OPTIONS
    options = list(dict.fromkeys([*search.get("hits", []), *st.session_state["map_hl"]])) if many else list(names)
    highlight = st.multiselect("Highlight LoRAs", options, current("map_hl"), key="map_hl", format_func=lambda i: names.get(i, i))
    keep("map_hl", param="hl", fmt=ids_param)
    with st.expander("UMAP parameters"):
        url_default("map_nn", 15, param="nn", parse=lambda t: min(max(int(t), 2), 100))
        nn = st.slider("Neighbours", 2, 100, current("map_nn"), key="map_nn")
        keep("map_nn", param="nn", fmt=lambda v: None if v == 15 else str(v))
        url_default("map_md", 0.1, param="md", parse=lambda t: min(max(round(float(t), 2), 0.0), 0.99))
        md = st.slider("Minimum distance", 0.0, 0.99, current("map_md"), step=0.01, key="map_md")
        keep("map_md", param="md", fmt=lambda v: None if v == 0.1 else f"{v:g}")
        url_default("map_ep", 0, param="ep", parse=lambda t: min(max(int(t), 0), 2000))
        ep = st.number_input("Epochs (0: UMAP's default)", 0, 2000, current("map_ep"), step=50, key="map_ep")
        keep("map_ep", param="ep", fmt=lambda v: str(v) if v else None)

config = maps.MapConfig(n_neighbors=int(nn), min_dist=float(md), n_epochs=int(ep) or None)
if config != data.config:  # the link's parameters differ from what this session had
    data = read_map(store, config)
if data.map_error:
    st.error(f"Could not load the map: {literal(data.map_error)}")
cmap = data.map
if cmap is None:
    default = config == maps.MapConfig()
    st.info(
        ("No map of the corpus is cached yet" if default else "No map with these UMAP parameters is cached yet")
        + f". Fitting one (UMAP on {len(view)} directions) takes from seconds to minutes, so only a reviewer "
        "can start it here; `python -m carlos corpus import` fits the default map."
        + ("" if default else " The default parameters may already have a map: reset the UMAP parameters in the sidebar.")
    )
    write_note(user)
    if st.button("Fit this map now (UMAP)", key="map_fit", disabled=not user.can_write):
        with explained("fit the map"):
            with st.spinner(f"Fitting the map of {len(view)} directions (UMAP; once per corpus and parameters, then cached)…"):
                cmap = maps.fit_map(store, view, config, user=user)
if cmap is None:
    st.stop()

with explained("name the map's regions"):  # named when the map was read (or fitted on this run): remembered, no store read
    regions = clusters.corpus_clusters(store, view, cmap, risk=frame["risk_class"].tolist())
frame = mapview.with_regions(frame.merge(cmap.frame, on="lora_id", how="left"), regions)
if colour == "search score":
    frame["score"] = frame["lora_id"].map(search["scores"])
region_label = regions.labels()
sizes = {c.cluster_id: c.size for c in regions.clusters}


def _region(text: str) -> int:
    if int(text) not in region_label:
        raise ValueError(text)
    return int(text)


# view state (URL): region, zoom (view), box selection (box), clicked points (pts)
url_default("map_region", None, param="region", parse=_region)
url_default("map_view", None, param="view", parse=mapview.Viewport.parse)
url_default("map_box", None, param="box", parse=mapview.parse_box)
url_default("map_points", [], param="pts", parse=parse_ids)
st.session_state.setdefault("map_lasso", None)
if st.session_state["map_region"] not in region_label:
    st.session_state["map_region"] = None  # a region of another map (other parameters)


def on_chart_select() -> None:
    """A box, lasso or click on the map: kept as view state; a clicked region marker selects the region."""
    sel = mapview.parse_selection(st.session_state["map_chart"].selection)
    if sel.region is not None and sel.region in region_label:
        st.session_state["map_region"] = sel.region
        return
    st.session_state["map_box"], st.session_state["map_lasso"], st.session_state["map_points"] = sel.box, sel.lasso, list(sel.ids)


def on_region_pick(key: str) -> None:
    """A row of the region table or a bar of the risk-mix chart selects that region."""
    sel = st.session_state[key].selection
    if key == "map_regions_table":
        rows = sel.get("rows") or []
        st.session_state["map_region"] = list(region_label)[rows[0]] if rows else None  # table rows: regions in order
    else:
        picked = mapview.parse_selection(sel).region
        if picked is not None:
            st.session_state["map_region"] = picked


def zoom_to(box: mapview.Viewport | None) -> None:
    st.session_state["map_view"] = box


top = st.columns([3, 1, 1])
region = top[0].selectbox(
    "Region",
    list(region_label),
    key="map_region",
    index=None,
    placeholder=f"All {sum(c != clusters.NOISE for c in region_label)} regions"
    + (f" and {sizes[clusters.NOISE]} unclustered LoRAs" if sizes.get(clusters.NOISE) else "")
    + " (choose one here, or click its row or bar below)",
    format_func=lambda c: f"{region_label[c]} ({sizes[c]} LoRAs)",
)
keep("map_region", param="region", fmt=lambda v: None if v is None else str(v))
in_region = frame[frame["cluster_id"] == region] if region is not None else frame.iloc[:0]
top[1].button(
    "Zoom to region",
    key="map_zoom_region",
    disabled=region is None,
    on_click=zoom_to,
    args=(mapview.Viewport.around(in_region[["x", "y"]].to_numpy()) if len(in_region) else None,),
)
top[2].button("Reset zoom", key="map_zoom_reset", disabled=st.session_state["map_view"] is None, on_click=zoom_to, args=(None,))
keep("map_view", param="view", fmt=lambda v: v.param() if v is not None else None)

view_config = mapview.MapViewConfig.from_env()
layer = mapview.aggregate(frame, st.session_state["map_view"], view_config, always=highlight)
fig = plots.map_scatter(
    layer.points,
    colour=colour,
    highlight_ids=highlight,
    labels=mapview.place_labels(regions.clusters, layer.viewport),
    selected_region=region,
    outline=mapview.hull(in_region[["x", "y"]].to_numpy()) if len(in_region) else None,
    density=layer.density,
    viewport=layer.viewport if st.session_state["map_view"] is not None or layer.sampled else None,
    webgl=len(layer.points) > view_config.svg_max_points,
    totals=plots.category_totals(frame, colour) if layer.sampled else None,
)
st.plotly_chart(fig, key="map_chart", on_select=on_chart_select, selection_mode=("points", "box", "lasso"))
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
if layer.sampled:
    st.caption(
        f"{layer.n_in_view:,} LoRAs in view: drawn as their density (cells) and a fixed sample of {len(layer.points):,}. "
        "A box or lasso selects every LoRA inside it, drawn or not; **Zoom to selection** redraws that part, "
        "with every point once few enough are in view."
    )
keep("map_box", param="box", fmt=mapview.box_param)
keep("map_points", param="pts", fmt=ids_param)
chosen = mapview.Selection(box=st.session_state["map_box"], lasso=st.session_state["map_lasso"], ids=tuple(st.session_state["map_points"]))
picked = chosen.members(frame)


def link_list(rows, what: str, key: str) -> None:
    """Links to the detail pages of ``rows`` (20, or up to 500 on request)."""
    n = len(rows)
    limit = 500 if n > 20 and st.toggle(f"Show more of the {n:,} {what} (20 listed; up to 500)", key=key) else 20
    for lid, name in zip(rows["lora_id"].iloc[:limit], rows["name"].iloc[:limit]):
        st.page_link(DETAIL_PAGE, label=f"{literal(names.get(lid, name))} — details", query_params={"lora": lid})


if not chosen.empty:
    mix = picked["cluster"].value_counts()
    st.subheader(f"Selected: {len(picked):,}")
    st.caption(
        "In regions: " + "; ".join(f"{literal(r)} ({n})" for r, n in mix.head(6).items()) + (" …" if len(mix) > 6 else "")
        if len(picked)
        else "No LoRA in the selection."
    )
    if len(picked) > 1:
        st.button("Zoom to selection", key="map_zoom_sel", on_click=zoom_to, args=(mapview.Viewport.around(picked[["x", "y"]].to_numpy()),))
    link_list(picked, "selected LoRAs", "map_sel_more")
else:
    st.caption(
        "Box- or lasso-select (every LoRA inside, drawn or not) to list them with links to their details; "
        "in pan mode (toolbar) a click selects one point or a region's marker."
    )

st.subheader("Regions")
st.caption(
    "Dense regions of the map (HDBSCAN), named by the words their members' names and descriptions use more than "
    "the rest of the corpus do (class-based TF-IDF): what uploaders call the LoRAs that behave alike, "
    f"creator words shown as plain text. {sizes.get(clusters.NOISE, 0)} LoRAs lie in no region."
)
table = mapview.region_table(regions, plots.RISK_CLASSES)
left, right = st.columns([3, 2])
with left:
    st.dataframe(
        table,
        key="map_regions_table",
        on_select=lambda: on_region_pick("map_regions_table"),
        selection_mode="single-row",
        hide_index=True,
        width="stretch",
        column_order=["region", "LoRAs", *plots.RISK_CLASSES],
        column_config={
            "region": st.column_config.TextColumn("region", width="medium"),
            "LoRAs": st.column_config.NumberColumn("LoRAs", width=60),
            **{k: st.column_config.NumberColumn(k.replace("too ", ""), width=60) for k in plots.RISK_CLASSES},
        },
    )
with right:
    st.plotly_chart(
        map_layers.risk_mix_bar(table, plots.RISK_CLASSES, region),
        key="map_mix",
        on_select=lambda: on_region_pick("map_mix"),
        selection_mode="points",
    )
if region is not None:
    members = in_region.sort_values("strength", ascending=False)
    st.markdown(f"**Region {literal(region_label[region])}**: {len(members):,} LoRAs, strongest first")
    link_list(members, "LoRAs of this region", "map_region_more")
