"""Creator text in Streamlit: the one way pages put untrusted strings into Markdown.

Most Streamlit elements interpret their text as Markdown (titles, headers, captions,
``st.info``/``warning``/``error``/``success``, toasts, metric labels and values, expander
and tab labels, page links, button and radio labels, ``st.table`` cells). A LoRA name,
description, declared metadata value, trigger word, upload file name or error message
quoting one goes into such an element only through :func:`literal` (or :func:`code` for
an identifier), so it shows as its characters: no link, image, emphasis, heading, HTML,
LaTeX, emoji or colour, and nothing fetched. Plain-text widgets (``st.text``,
``st.dataframe`` cells, ``st.json``, select box and multiselect options) need nothing.
The rules live in :mod:`carlos.core.untrusted`.
"""

from __future__ import annotations

from typing import Any

from carlos.core.untrusted import markdown_code, markdown_literal


def literal(value: Any) -> str:
    """``value`` for any Markdown context, shown exactly as written (on one line)."""
    return markdown_literal(value)


def code(value: Any) -> str:
    """``value`` as inline code (ids, hashes, URL parameters), shown verbatim."""
    return markdown_code(value)
