"""Review queue (open items, claims, re-uploads and near-duplicates) and the audit log
(every decision with reviewer, time, status before → after; CSV and Parquet export)."""

from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st

from app.navigation import page_setup
from app.resources import get_store, require_corpus
from app.state import choice, current, current_index, keep, url_default
from app.widgets import detail_url, hidden_toggle
from carlos.pagemodels.common import names as page_names
from carlos.pagemodels.corpus_pages import read_review
from carlos.report import export as case_files
from carlos.review import workflow as review

user = page_setup()
st.title("Review queue & audit log")
store = get_store()
data = read_review(store)  # the page's one store read
view = require_corpus(data.basics)
names = page_names(view)

with st.sidebar:
    st.subheader("Queue")
    url_default("rq_status", list(review.OPEN_STATUSES), param="status", parse=lambda t: [s for s in t.split(",") if s in review.STATUSES])
    statuses = st.multiselect("Statuses", review.STATUSES, current("rq_status"), key="rq_status")
    keep("rq_status", param="status", fmt=lambda v: ",".join(v) if list(v) != list(review.OPEN_STATUSES) else None)
    url_default("rq_cos", 0.95, param="cos", parse=lambda t: min(max(round(float(t), 2), 0.5), 1.0))
    cos = st.slider("Near-duplicate level (direction cosine ≥)", 0.5, 1.0, current("rq_cos"), step=0.01, key="rq_cos")
    keep("rq_cos", param="cos", fmt=lambda v: None if v == 0.95 else f"{v:g}")

# -- the queue ----------------------------------------------------------------------------------------
st.subheader("Queue")
all_items = review.statuses_of(view, data.statuses)
queue = review.queue_of(view, all_items, statuses=statuses, near_duplicate_cos=cos) if statuses else all_items[:0]
reviewers = sorted(set(all_items["reviewer"].dropna()) | set(all_items["claimed_by"].dropna()))
url_default("rq_reviewer", "anyone", param="reviewer", parse=choice(["anyone", *reviewers]))
who = st.selectbox(
    "Last decided or claimed by", ["anyone", *reviewers], current_index(["anyone", *reviewers], "rq_reviewer"), key="rq_reviewer"
)
keep("rq_reviewer", param="reviewer", fmt=lambda v: None if v == "anyone" else v)
if who != "anyone" and len(queue):
    queue = queue[(queue["reviewer"] == who) | (queue["claimed_by"] == who)]
if hidden_toggle(len(all_items) - len(queue), "LoRAs", "rq_show_all", by="the status and reviewer filters"):
    queue = review.queue_of(view, all_items, statuses=review.STATUSES, near_duplicate_cos=cos)
if queue.empty:
    st.info("Nothing in the queue for these filters. Flag LoRAs on the Risk page or a LoRA's detail page.")
else:
    shown = queue.copy()
    shown["claim"] = shown["claimed_by"].fillna("unclaimed")
    for col in ("near_duplicates", "same_file"):
        shown[col] = shown[col].map(lambda ids: "not looked up" if ids is None else "; ".join(names.get(i, i) for i in ids))
    skipped = int(queue["near_duplicates"].isna().sum())  # over the work budget: not looked up
    if skipped:
        st.caption(
            f"Near-duplicates were looked up for the {len(queue) - skipped} most recent items only (a bounded amount of "
            f"work per page at {len(view)} LoRAs); narrow the status or reviewer filters to see them for the other {skipped}."
        )
    shown["details"] = shown["lora_id"].map(detail_url)
    st.dataframe(
        shown[
            [
                "group",
                "name",
                "status",
                "claim",
                "reviewer",
                "decided_at",
                "note",
                "same_file",
                "near_duplicates",
                "strength",
                "consistency",
                "details",
            ]
        ],
        hide_index=True,
        width="stretch",
        column_config={
            "group": st.column_config.NumberColumn("group", help="items linked by near-duplicates or the same file share a group"),
            "same_file": "re-uploads (same sha256)",
            "near_duplicates": f"near-duplicates (cos ≥ {cos:g})",
            "details": st.column_config.LinkColumn("Details", display_text="open & decide"),
            "reviewer": "last decided by",
            "decided_at": "at",
        },
    )
    chosen = st.multiselect(
        "Case file of",
        list(queue["lora_id"]),
        key="rq_case",
        format_func=lambda i: f"{names.get(i, i)} ({i})",
        placeholder="Choose LoRAs of the queue for one case file",
    )
    for col, fmt in zip(st.columns(3), case_files.download_formats()):
        col.download_button(
            f"Download case file ({fmt.upper()})",
            partial(case_files.case_bytes, store, chosen, fmt, generated_by=user.name),
            case_files.download_name(chosen, fmt),
            case_files.MIME[fmt],
            key=f"rq_case_{fmt}",
            on_click="ignore",
            disabled=not chosen,
        )

# -- weight-space copies ----------------------------------------------------------------------------------
st.subheader("Same weights, other files")
copies = data.weight_groups
if copies.empty:
    st.caption("No weight-space matches stored yet: every validated upload is fingerprinted and compared with the stored ones.")
else:
    wnames = dict(zip(copies["lora_id"], copies["name"]))
    shown = copies.copy()
    for col in ("same_weights_as", "shares_weights_with"):
        shown[col] = shown[col].map(lambda ids: "; ".join(wnames.get(i, i) for i in ids))
    shown["details"] = shown["lora_id"].map(detail_url)
    cols = ["group", "name", "role", "status", "suggested_decision", "suggested_because", "same_weights_as", "shares_weights_with"]
    st.dataframe(  # plain-text cells: names are creator text
        shown[[*cols, "details"]],
        hide_index=True,
        width="stretch",
        key="rq_weight_groups",
        column_config={
            "group": st.column_config.NumberColumn("group", help="copies of one LoRA (same, rescaled or rank-reduced weights)"),
            "suggested_decision": "suggested decision",
            "suggested_because": "because",
            "same_weights_as": "same LoRA as",
            "shares_weights_with": "shares weights with (merge, modules)",
            "details": st.column_config.LinkColumn("Details", display_text="open & decide"),
        },
    )
    st.caption("The original is the member fingerprinted first; a copy is suggested its original's decision. Decide on each LoRA's page.")

# -- the audit log ----------------------------------------------------------------------------------------
st.subheader("Audit log")
log = data.log
if log.empty:
    st.caption("No decisions recorded yet. The log is append-only: decisions are never edited or deleted.")
    st.stop()
f = st.columns(3)
by = f[0].multiselect("Reviewer", sorted(log["reviewer"].unique()), key="log_reviewer")
acts = f[1].multiselect("Action", sorted(log["action"].unique()), key="log_action")
text = f[2].text_input("LoRA name contains", key="log_name")
keep_rows = pd.Series(True, index=log.index)
if by:
    keep_rows &= log["reviewer"].isin(by)
if acts:
    keep_rows &= log["action"].isin(acts)
if text:
    keep_rows &= log["name"].fillna("").str.contains(text, case=False, regex=False)
if hidden_toggle(int((~keep_rows).sum()), "decisions", "log_show_all", by="the filters above"):
    keep_rows[:] = True
shown = log[keep_rows].copy()
shown["change"] = shown["status_before"] + " → " + shown["status_after"]
st.dataframe(shown[["created_at", "reviewer", "name", "action", "change", "note", "lora_id"]], hide_index=True, width="stretch")
d = st.columns(2)
d[0].download_button(
    "Download the whole log (CSV)",
    partial(review.audit_log_bytes, log, "csv"),  # made on click, from the log read above
    "carlos-audit-log.csv",
    "text/csv",
    key="log_csv",
    on_click="ignore",
)
d[1].download_button(
    "Download the whole log (Parquet)",
    partial(review.audit_log_bytes, log, "parquet"),
    "carlos-audit-log.parquet",
    "application/vnd.apache.parquet",
    key="log_parquet",
    on_click="ignore",
)
