"""CARLoS dashboard entry point: ``make run`` (or ``streamlit run streamlit_app.py``)."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="CARLoS: LoRAs by what they do", page_icon="🔎", layout="wide")

pages = [
    st.Page("pages/overview.py", title="Overview", icon="🏠", default=True, url_path="overview"),
]
st.navigation(pages).run()
