"""Session and URL state: widget values kept across pages and written to the address bar,
flash messages that survive a rerun, and the last search (for the risk scatter and the map).

URL state: a widget's first value on a page comes from the URL's query parameter (a
shared link or a page link), else the value kept in this session from another page,
else its default; after the widget is drawn its value is kept and written back to
``st.query_params``, so the address bar is always a shareable link to the current view.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import streamlit as st

from app.text import code
from carlos.errors import CarlosError

T = TypeVar("T")


_KEEP = "_keep_"  # session_state prefix of widget values kept across pages


#: Where the search page leaves its last result for the risk scatter and the map:
#: {"query": str, "scores": {lora_id: score}, "hits": [lora_id, ...]}.
SEARCH_KEY = "carlos_search"


def last_search() -> dict[str, Any]:
    """The last search of this session (see SEARCH_KEY), or {} when there was none."""
    return st.session_state.get(SEARCH_KEY) or {}


def colour_choices(base: Sequence[str]) -> list[str]:
    """``base`` plus "search score" once this session has run a search."""
    return [*base, "search score"] if last_search().get("scores") else list(base)


def flash(kind: str, text: str) -> None:
    """Queue a message (``kind``: success, warning, info) for the next run; pages call this
    then ``st.rerun()`` so everything on the page reflects the write. ``text`` is Markdown:
    creator text in it goes through :func:`app.text.literal`."""
    st.session_state.setdefault("_flash", []).append((kind, text))


def show_flash() -> None:
    """Show the queued messages once (``page_setup`` calls it at the top of every page)."""
    for kind, text in st.session_state.pop("_flash", []):
        getattr(st, kind)(text)


def url_default(key: str, default: T, *, param: str | None = None, parse: Callable[[str], T] | None = None) -> None:
    """Give widget ``key`` its first value on this page: the URL's ``param`` (a shared link,
    a ``st.page_link``) > the value kept from another page > ``default``. Call before
    drawing the widget (with ``key=key``).

    Where the widget's own default differs from what this sets (``index=None`` of a selectbox
    naming a record), also pass the current value as the default: the browser commits the
    default of the *latest* drawing of a widget whose code arrives late (a slow or loaded
    client), and a form submitted then would send the default back; the detail page lost its
    LoRA, and the decision with it, that way (``tests/test_browser_login.py`` under load)."""
    if key in st.session_state:
        return
    raw = st.query_params.get(param) if param else None
    if raw is not None:
        try:
            st.session_state[key] = parse(raw) if parse else raw
            return
        except (ValueError, TypeError, CarlosError):
            st.sidebar.caption(f"Ignored the link's {code(f'{param}={raw}')}: not a valid value.")  # a link is untrusted
    st.session_state[key] = st.session_state.get(_KEEP + key, default)


def current(key: str) -> Any:
    """Widget ``key``'s value now, to pass as its default (see :func:`url_default`)."""
    return st.session_state[key]


def current_index(options: Sequence[Any], key: str) -> int:
    """The position of widget ``key``'s value among ``options`` (0 when it is not one), to pass as
    a radio's or selectbox's ``index`` (see :func:`url_default`)."""
    value = st.session_state.get(key)
    return list(options).index(value) if value in options else 0


def url_candidate(key: str, param: str) -> str | None:
    """The raw value :func:`url_default` would give widget ``key`` first: its current value, else
    the URL's ``param``, else the value kept from another page. A page model reads what it names
    in the same store session as everything else, before the widget is drawn."""
    if key in st.session_state:
        return st.session_state[key]
    raw = st.query_params.get(param)
    return raw if raw is not None else st.session_state.get(_KEEP + key)


def keep(key: str, *, param: str | None = None, fmt: Callable[[Any], str | None] = str) -> Any:
    """After drawing widget ``key``: keep its value for other pages and write it to the URL
    (``fmt`` returning None removes the parameter)."""
    value = st.session_state.get(key)
    st.session_state[_KEEP + key] = value
    if param:
        set_param(param, fmt(value) if value is not None else None)
    return value


def set_param(param: str, text: str | None) -> None:
    """Write one query parameter only when it changes (None or "" removes it)."""
    current = st.query_params.get(param)
    if not text:
        if current is not None:
            del st.query_params[param]
    elif current != text:
        st.query_params[param] = text


def ids_param(ids: Sequence[str], limit: int = 50) -> str | None:
    """A list of LoRA ids as one query parameter (the first ``limit``)."""
    return ",".join(list(ids)[:limit]) or None


def parse_ids(text: str) -> list[str]:
    return [t for t in (s.strip() for s in text.split(",")) if t]


def choice(options: Sequence[T]) -> Callable[[str], T]:
    """A parser accepting only one of ``options`` (as text)."""

    def parse(text: str) -> T:
        for o in options:
            if str(o) == text:
                return o
        raise ValueError(text)

    return parse
