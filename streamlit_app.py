"""CARLoS dashboard entry point: ``make run`` (or ``streamlit run streamlit_app.py``)."""

from __future__ import annotations

import streamlit as st

from app.navigation import PAGES

st.set_page_config(page_title="CARLoS: LoRAs by what they do", page_icon="🔎", layout="wide")
pages = [
    st.Page(script, title=title, icon=icon, url_path=url_path, default=(url_path == "overview")) for script, title, icon, url_path in PAGES
]
st.navigation(pages, position="hidden").run()
