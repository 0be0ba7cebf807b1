"""Widgets the pages share: LoRA tables and links, representation and decision panels, image pairs, error messages."""

from __future__ import annotations

import base64
import contextlib
import html
from collections.abc import Iterator
from typing import Any

import pandas as pd
import streamlit as st

from app.access import write_note
from app.state import flash
from app.text import literal
from carlos.errors import CarlosError
from carlos.review import workflow as review
from carlos.review.access import CurrentUser
from carlos.store.store import Store


@contextlib.contextmanager
def explained(action: str) -> Iterator[None]:
    """Show a CARLoS error as a message in the page instead of a traceback."""
    try:
        yield
    except CarlosError as e:
        st.error(f"Could not {action}: {literal(e)}")  # messages may quote names, file names or links


def detail_url(lora_id: str) -> str:
    """Relative link to the detail page of one LoRA (works under any base URL path)."""
    from urllib.parse import quote

    return f"detail?lora={quote(lora_id, safe=':')}"


def civitai_url(model_id: Any, version_id: Any) -> str | None:
    if model_id is None or pd.isna(model_id):
        return None
    url = f"https://civitai.com/models/{int(model_id)}"
    return url if version_id is None or pd.isna(version_id) else f"{url}?modelVersionId={int(version_id)}"


def hidden_toggle(n_hidden: int, what: str, key: str, by: str = "the current thresholds or filters") -> bool:
    """Say how many items a filter removed and offer to show them; returns the toggle."""
    if n_hidden <= 0:
        st.caption(f"No {what} removed by {by}.")
        return False
    return st.toggle(f"Show the {n_hidden} {what} removed by {by}", key=key)


def representations_table(table: pd.DataFrame, warnings: tuple[str, ...] = ()) -> None:
    """Every representation of one LoRA (``DetailModel.representations``: percentiles within its
    own space, 95 % intervals and risk class with confidence for local characterizations, provenance);
    an explained empty state when it was never characterized."""
    if table.empty:
        st.info("Not characterized yet: no Direction, Strength or Consistency for this LoRA.")
        return
    pct_col = st.column_config.NumberColumn(format="%.0f")
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "Str pct": pct_col,
            "Cons pct": pct_col,
            "Strength": st.column_config.NumberColumn(format="%.3f"),
            "Consistency": st.column_config.NumberColumn(format="%.4f"),
        },
    )
    for text in warnings:
        st.warning(text)
    st.caption(
        "Percentiles: share of the LoRAs in the same space at or below this value. 95%: intervals of the "
        "full-protocol value from this run's prompts (prompts as clusters); corpus rows have no per-pair data."
    )


def decision_panel(store: Store, lora_id: str, user: CurrentUser, holder: str | None) -> None:
    """Claim, then approve / flag / escalate / reopen with a note; read-only with the reason.
    ``holder``: who holds the claim now (read with the page's model)."""
    write_note(user)
    if holder is None:
        if st.button("Claim for review", key="detail_claim", disabled=not user.can_write):
            with explained("claim this LoRA"):
                review.claim(store, lora_id, user)
                st.rerun()
        return
    if holder != user.name:
        st.info(f"Claimed by {holder}: they decide or release it first.")
        return
    with st.form("decision"):
        action = st.radio("Decision", list(review.ACTIONS), key="detail_action", horizontal=True)
        note = st.text_area("Note (kept in the audit log)", key="detail_note", max_chars=review.MAX_NOTE)
        decided = st.form_submit_button("Record decision", disabled=not user.can_write)
    if decided:
        with explained("record the decision"):
            review.decide(store, lora_id, user, action, note or None)
            flash("success", f"Recorded: {action} by {user.name}.")
            st.rerun()
    if st.button("Release claim", key="detail_release", disabled=not user.can_write):
        with explained("release the claim"):
            review.release(store, lora_id, user)
            st.rerun()


def image_pairs(thumbs: pd.DataFrame, *, reveal: bool, per_row: int = 4) -> None:
    """Base/LoRA thumbnails side by side, blurred by CSS until the reviewer reveals them
    (images may be NSFW or reproduce protected works). PNG bytes become data URIs;
    prompts are HTML-escaped."""
    blur = "" if reveal else "filter: blur(14px);"
    cells = []
    for r in thumbs.itertuples(index=False):
        imgs = "".join(
            f'<img alt="{label}" style="width:48%;{blur}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"/>'
            if isinstance(png, (bytes, bytearray))
            else f'<span style="width:48%;display:inline-block">no {label} image</span>'
            for label, png in (("base", r.base_png), ("LoRA", r.lora_png))
        )
        caption = html.escape(f"{r.category or ''} · seed {r.seed} · {r.prompt or ''}")
        cells.append(f'<figure style="margin:0;overflow:hidden">{imgs}<figcaption style="font-size:0.8em">{caption}</figcaption></figure>')
    grid = f'<div style="display:grid;grid-template-columns:repeat({per_row},1fr);gap:12px">' + "".join(cells) + "</div>"
    st.html(grid)
    st.caption(
        "Left: base SDXL; right: with the LoRA (same prompt and seed)."
        + ("" if reveal else " Blurred: switch on *Reveal images* to see them.")
    )


def lora_table(frame: pd.DataFrame, *, key: str | None = None) -> None:
    """A sortable table of LoRAs with values, percentiles, flags, status and a detail link."""
    cols = [
        "name",
        "link",
        "version_id",
        "strength",
        "strength_pct",
        "consistency",
        "consistency_pct",
        "risk_class",
        "risk_confidence",
        "status",
        "flags",
        "nsfw",
        "download_count",
        "lora_id",
    ]
    shown = frame.copy()
    shown["link"] = shown["lora_id"].map(detail_url)
    shown = shown[[c for c in cols if c in shown.columns]]
    if "flags" in shown:
        shown["flags"] = shown["flags"].map(lambda f: "; ".join(f) if len(f) else "")
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        key=key,
        column_config={
            "name": st.column_config.TextColumn("LoRA", width="large"),
            "link": st.column_config.LinkColumn("Details", display_text="open"),
            "version_id": st.column_config.NumberColumn("Civitai version", format="%d"),
            "strength": st.column_config.NumberColumn("Strength", format="%.2f"),
            "strength_pct": st.column_config.ProgressColumn("Str pct", format="%.0f", min_value=0, max_value=100),
            "consistency": st.column_config.NumberColumn("Consistency", format="%.3f"),
            "consistency_pct": st.column_config.ProgressColumn("Cons pct", format="%.0f", min_value=0, max_value=100),
            "risk_class": "Risk class",
            "risk_confidence": "Risk (confidence)",
            "status": "Review status",
            "nsfw": "NSFW",
            "download_count": st.column_config.NumberColumn("Downloads", format="%d"),
        },
    )
