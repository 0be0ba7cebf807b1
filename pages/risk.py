"""Risk: Strength (substantiality) × Consistency (volition) of the whole corpus, with the
threshold regions; select LoRAs on the chart to flag them in bulk; save thresholds."""

from __future__ import annotations

import streamlit as st

from app.access import write_note
from app.navigation import page_setup
from app.resources import get_store, require_corpus
from app.state import choice, colour_choices, current_index, flash, ids_param, keep, last_search, parse_ids, url_default
from app.text import literal
from app.thresholds import fmt_threshold, threshold_sidebar
from app.widgets import explained, lora_table
from carlos.pagemodels.common import names as page_names
from carlos.pagemodels.corpus_pages import build_risk, read_risk, risk_figure
from carlos.review import workflow as review
from carlos.viz import figures as plots

user = page_setup()
st.title("Risk: substantiality × volition")
st.caption(
    "Strength: how much of the output a LoRA contributes (substantiality). Consistency: how far "
    "its effect happens whatever the prompt asks (volition). Strong *and* consistent LoRAs "
    "deserve review; weak or inconsistent ones are unlikely to reproduce protected elements."
)

store = get_store()
data = read_risk(store)  # the page's one store read
view = require_corpus(data.basics)
thresholds = threshold_sidebar(view, data.basics.saved)
colours = colour_choices(["risk class", "NSFW level", "review status"])
with st.sidebar:
    url_default("risk_axes", "values", param="axes", parse=choice(plots.AXES))
    axes = st.radio(
        "Axes",
        plots.AXES,
        current_index(plots.AXES, "risk_axes"),
        key="risk_axes",
        horizontal=True,
        format_func={"values": "values", "ranks": "ranks (as in the paper)"}.get,
    )
    keep("risk_axes", param="axes", fmt=lambda v: None if v == "values" else v)
    url_default("risk_colour", "risk class", param="colour", parse=choice(colours))
    colour = st.selectbox("Colour by", colours, current_index(colours, "risk_colour"), key="risk_colour")
    keep("risk_colour", param="colour", fmt=lambda v: None if v == "risk class" else v)

model = build_risk(data, thresholds)  # shared by the sessions showing these thresholds
frame, intervals, stats, cuts = model.frame, model.intervals, model.stats, model.cuts
if colour == "search score":
    frame = frame.assign(score=frame["lora_id"].map(last_search()["scores"]))  # this session's own search
m = st.columns(5)
m[0].metric("Too strong", stats.over_strength)
m[1].metric("Too unstable", stats.under_consistency)
m[2].metric("Retained", stats.retained)
m[3].metric("Review", stats.risk_classes["review"])
m[4].metric("Low risk", stats.risk_classes["low risk"])
st.caption(
    f"All {stats.loras} LoRAs are plotted; the thresholds only classify them "
    f"({stats.excluded_by_both} are both too strong and too unstable). "
    f"Corr(Strength, Consistency) = {stats.strength_consistency_r:.2f}."
)

names = page_names(view)


@st.fragment
def scatter_and_selection() -> None:
    """The scatter, its selection and the bulk flag: a box or lasso reruns only this part."""
    if colour == "search score":
        fig = plots.risk_scatter(frame, thresholds, axes=axes, colour=colour, review_cuts=cuts)
    else:
        fig = risk_figure(model, thresholds, axes, colour)
    event = st.plotly_chart(fig, key="risk_scatter", on_select="rerun", selection_mode=("box", "lasso"))
    if len(intervals):
        st.caption(
            f"Error bars: 95% intervals of the {len(intervals)} upload(s) characterized here"
            + (" (shown on the value axes)" if axes != "values" else "")
            + "; corpus LoRAs have no per-pair data, so no interval."
        )
    different = frame[frame["measured_differently"].fillna(False).astype(bool)] if "measured_differently" in frame else frame[:0]
    if len(different):
        st.warning(
            f"{len(different)} LoRA(s) on this scatter were measured differently from the corpus (another prompt set, "
            "noise or model): not directly comparable with it, and the paper's thresholds do not transfer. "
            'Their rows carry the flag "measured differently from the corpus".'
        )

    # selection: the chart's box/lasso, else the link's ?sel=…; editable before flagging
    chart_ids = plots.selected_ids(event.selection if event else None)
    if chart_ids and chart_ids != st.session_state.get("_risk_chart_ids"):
        st.session_state["risk_sel"] = chart_ids
    st.session_state["_risk_chart_ids"] = chart_ids
    url_default("risk_sel", [], param="sel", parse=lambda t: [i for i in parse_ids(t) if i in names])
    st.subheader("Selected LoRAs")
    selected = st.multiselect(
        "Box- or lasso-select points on the chart, or pick LoRAs here",
        list(names),
        key="risk_sel",
        format_func=lambda i: f"{names[i]} ({i})",
    )
    keep("risk_sel", param="sel", fmt=ids_param)
    if not selected:
        st.caption("Nothing selected.")
        return
    lora_table(frame.set_index("lora_id").loc[selected].reset_index(), key="risk_selected_table")
    write_note(user)
    with st.form("bulk_flag"):
        note = st.text_input("Note for the audit log", key="risk_flag_note")
        go = st.form_submit_button(f"Flag these {len(selected)} LoRAs", disabled=not user.can_write)
    if go:
        with explained("flag the selection"):
            res = review.bulk_flag(store, selected, user, note or None)
            flash("success", f"Flagged {len(res['flagged'])} LoRA(s) as {user.name}.")
            for lid, why in res["skipped"]:
                flash("warning", f"Skipped {literal(names.get(lid, lid))}: {why}.")
            st.rerun()  # the whole page: counts, colours and statuses change


scatter_and_selection()

st.subheader("Save these thresholds")
st.caption(
    f"Records Strength ≤ {fmt_threshold(thresholds.strength_max)} and Consistency ≥ "
    f"{fmt_threshold(thresholds.consistency_min)} "
    "as the team's thresholds, with your name and the time; every page starts from them."
)
with st.form("save_thresholds"):
    t_note = st.text_input("Why (for the record)", key="risk_thr_note")
    save = st.form_submit_button("Save these thresholds", disabled=not user.can_write)
if save:
    with explained("save the thresholds"):
        review.set_thresholds(store, thresholds, user, t_note or None)
        flash("success", f"Saved the thresholds as {user.name}.")
        st.rerun()
history = data.threshold_history
if history.empty:
    st.caption("No reviewer has saved thresholds yet: the paper's 9.8 / 0.041 apply.")
else:
    st.dataframe(history[["created_at", "reviewer", "strength_max", "consistency_min", "note"]], hide_index=True, width="stretch")
