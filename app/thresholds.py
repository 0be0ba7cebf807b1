"""The threshold sidebar: Strength max / Consistency min, starting at the saved thresholds, kept in the URL."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from app.resources import get_store
from app.state import current, keep, url_default
from carlos.config import Thresholds
from carlos.core.view import CorpusView
from carlos.review import workflow as review


def threshold_sidebar(view: CorpusView, saved: Thresholds | None = None) -> Thresholds:
    """Strength max / Consistency min sliders (starting at the team's ``saved`` thresholds, which a
    page model read with the rest of the page; read here when not given) in the sidebar."""
    saved = review.current_thresholds(get_store()) if saved is None else saved
    s_hi = float(max(view.frame["strength"].max(), saved.strength_max or 0) * 1.05 + 0.5)
    c_hi = float(max(view.frame["consistency"].max(), saved.consistency_min or 0) * 1.05 + 0.01)

    def clamp(hi: float, nd: int, off: float) -> Callable[[str], float]:
        return lambda t: off if t == "off" else round(min(max(float(t), 0.0), hi), nd)

    url_default("thr_s_on", saved.strength_max is not None, param="smax", parse=lambda t: t != "off")
    url_default("thr_s", saved.strength_max or 9.8, param="smax", parse=clamp(s_hi, 2, saved.strength_max or 9.8))
    url_default("thr_c_on", saved.consistency_min is not None, param="cmin", parse=lambda t: t != "off")
    url_default("thr_c", saved.consistency_min or 0.041, param="cmin", parse=clamp(c_hi, 3, saved.consistency_min or 0.041))
    with st.sidebar:
        st.subheader("Thresholds")
        st.caption(
            f"Saved: Strength ≤ {fmt_threshold(saved.strength_max)}, Consistency ≥ "
            f"{fmt_threshold(saved.consistency_min)} (paper: 9.8 / 0.041)"
        )
        s_on = st.checkbox("Filter too strong", current("thr_s_on"), key="thr_s_on")
        s = st.slider("Strength max (substantiality)", 0.0, s_hi, current("thr_s"), step=0.05, key="thr_s", disabled=not s_on)
        c_on = st.checkbox("Filter too unstable", current("thr_c_on"), key="thr_c_on")
        c = st.slider("Consistency min (volition)", 0.0, c_hi, current("thr_c"), step=0.001, key="thr_c", format="%.3f", disabled=not c_on)
        st.button("Reset to saved", key="thr_reset", on_click=_reset_thresholds, args=(saved,))
    keep("thr_s_on")
    keep("thr_c_on")
    keep("thr_s", param="smax", fmt=lambda v: f"{v:g}" if s_on else "off")
    keep("thr_c", param="cmin", fmt=lambda v: f"{v:g}" if c_on else "off")
    return Thresholds(float(s) if s_on else None, float(c) if c_on else None)


def _reset_thresholds(saved: Thresholds) -> None:
    st.session_state["thr_s_on"] = saved.strength_max is not None
    st.session_state["thr_c_on"] = saved.consistency_min is not None
    if saved.strength_max is not None:
        st.session_state["thr_s"] = saved.strength_max
    if saved.consistency_min is not None:
        st.session_state["thr_c"] = saved.consistency_min


def fmt_threshold(v: float | None) -> str:
    """A threshold for people: its value, or "off" when the filter is disabled."""
    return "off" if v is None else f"{v:g}"
