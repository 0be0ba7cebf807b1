"""The page list and what every page runs first (navigation links, the user box, queued messages)."""

from __future__ import annotations

import streamlit as st

from app import memory
from app.access import sidebar_user
from app.state import show_flash
from carlos.review.access import CurrentUser

DETAIL_PAGE = "pages/detail.py"


#: Every page: (script, title, icon, url path). streamlit_app.py and the sidebar use this list.
PAGES: list[tuple[str, str, str, str]] = [
    ("pages/overview.py", "Overview", "🏠", "overview"),
    ("pages/search.py", "Search", "🔎", "search"),
    ("pages/risk.py", "Risk: substantiality × volition", "⚖️", "risk"),
    ("pages/map.py", "Map of directions", "🗺️", "map"),
    ("pages/detail.py", "LoRA detail", "🔬", "detail"),
    ("pages/characterize.py", "Characterize an upload", "🧪", "characterize"),
    ("pages/evaluation.py", "Evaluation", "📈", "evaluation"),
    ("pages/review.py", "Review queue & audit log", "📋", "review"),
]


def page_setup() -> CurrentUser:
    """First call of every page: navigation, the sidebar's user box and any queued messages.
    In the pages, not the entry point, so a page also works when run on its own (AppTest, or
    Streamlit's legacy ``pages/`` mode, which skips the entry point on a fresh server)."""
    memory.settle()  # long-lived objects out of the post-run collection, when they grew
    st.set_page_config(page_title="CARLoS: LoRAs by what they do", page_icon="🔎", layout="wide")
    with st.sidebar:
        for script, title, icon, _ in PAGES:
            try:
                st.page_link(script, label=title, icon=icon)
            except Exception as e:  # noqa: BLE001 - a page missing from st.navigation (AppTest)
                if type(e).__name__ in ("RerunException", "StopException"):
                    raise
        st.divider()
    user = sidebar_user()
    show_flash()
    return user
