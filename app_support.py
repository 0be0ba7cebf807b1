"""App-side glue for the Streamlit pages: cached store and views, access, URL state, widgets.

The only module besides the pages that imports streamlit; ``carlos/`` never does.
Pages stay thin: they call these helpers and ``carlos/`` functions, nothing else.

URL state: a widget's first value on a page comes from the URL's query parameter (a
shared link or a page link), else the value kept in this session from another page,
else its default; after the widget is drawn its value is kept and written back to
``st.query_params``, so the address bar is always a shareable link to the current view.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import html
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import streamlit as st

from carlos.config import CORPUS_EMBEDDER, Thresholds, default_paths
from carlos.core.risk import RiskPolicy, annotate, nsfw_label
from carlos.core.view import CorpusView
from carlos.errors import CarlosError
from carlos.review import workflow as review
from carlos.search.capabilities import Capabilities, detect
from carlos.store.catalog import load_view
from carlos.store.store import Store

T = TypeVar("T")
_KEEP = "_keep_"  # session_state prefix of widget values kept across pages
DETAIL_PAGE = "pages/detail.py"
#: Where the search page leaves its last result for the risk scatter and the map:
#: {"query": str, "scores": {lora_id: score}, "hits": [lora_id, ...]}.
SEARCH_KEY = "carlos_search"


# -- store, views, capabilities --------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> Store:
    return Store.open(path)


def get_store() -> Store:
    """One Store object per process and path (it opens short-lived connections itself)."""
    return _open_store(str(default_paths().db_path))


def get_view(embedder: str = CORPUS_EMBEDDER) -> CorpusView:
    """The corpus view; ``load_view`` caches it per store data version."""
    return load_view(get_store(), embedder)


def require_corpus() -> CorpusView:
    """The corpus view, or an explained empty state that stops the page."""
    try:
        view = get_view()
    except CarlosError as e:
        st.info(f"The store has no corpus yet: {e}. Run `make run` (it imports the corpus) or `python -m carlos corpus import`.")
        st.stop()
    if len(view) == 0:
        st.info("The store is empty. Run `python -m carlos corpus import`.")
        st.stop()
    return view


def corpus_frame(view: CorpusView, thresholds: Thresholds) -> pd.DataFrame:
    """The view annotated under ``thresholds`` (risk class, percentiles, flags) with each
    LoRA's review status and claim holder, and its NSFW label."""
    df = annotate(view.frame, RiskPolicy(thresholds=thresholds))
    status = review.status_frame(get_store(), view)[["lora_id", "status", "reviewer", "decided_at", "claimed_by"]]
    out = df.merge(status, on="lora_id", how="left")
    out.attrs.update(df.attrs)  # the review-region cuts
    out["nsfw"] = out["nsfw_level"].map(lambda v: nsfw_label(None if pd.isna(v) else v))
    return out


@st.cache_resource(show_spinner=False)
def _search_service(path: str) -> Any:
    from carlos.search.service import SearchService

    return SearchService(_open_store(path))


def search_service() -> Any:
    """One SearchService per store (it holds CLIP, the prefix cache and the text models)."""
    return _search_service(str(default_paths().db_path))


def last_search() -> dict[str, Any]:
    """The last search of this session (see SEARCH_KEY), or {} when there was none."""
    return st.session_state.get(SEARCH_KEY) or {}


def colour_choices(base: Sequence[str]) -> list[str]:
    """``base`` plus "search score" once this session has run a search."""
    return [*base, "search score"] if last_search().get("scores") else list(base)


@st.cache_data(ttl=60, show_spinner=False)
def capabilities() -> Capabilities:
    """What works on this machine right now (re-checked at most once a minute)."""
    return detect()


@contextlib.contextmanager
def explained(action: str) -> Iterator[None]:
    """Show a CARLoS error as a message in the page instead of a traceback."""
    try:
        yield
    except CarlosError as e:
        st.error(f"Could not {action}: {e}")


def flash(kind: str, text: str) -> None:
    """Queue a message (``kind``: success, warning, info) for the next run; pages call this
    then ``st.rerun()`` so everything on the page reflects the write."""
    st.session_state.setdefault("_flash", []).append((kind, text))


def show_flash() -> None:
    """Show the queued messages once (``page_setup`` calls it at the top of every page)."""
    for kind, text in st.session_state.pop("_flash", []):
        getattr(st, kind)(text)


# -- access ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurrentUser:
    """Who is using this session and whether they may write (decide, upload, set thresholds)."""

    name: str  # recorded as the reviewer of decisions (the e-mail under OIDC login)
    can_write: bool
    reason: str  # why the session is read-only ("" when it can write)
    mode: str  # "local" (no auth configured) or "oidc"
    logged_in: bool


def _secrets() -> dict[str, Any] | None:
    """The parsed secrets; {} when there is no secrets file, None when one exists but
    cannot be read (the caller then fails closed: read-only, never local write mode)."""
    try:
        return {k: st.secrets[k] for k in st.secrets}
    except (FileNotFoundError, KeyError, st.errors.StreamlitSecretNotFoundError):
        files = st.get_option("secrets.files") or []
        return None if any(Path(f).expanduser().exists() for f in files) else {}


def auth_configured() -> bool:
    """True when ``secrets.toml`` has an ``[auth]`` section (Streamlit's OIDC login)."""
    secrets = _secrets()
    return secrets is None or "auth" in secrets


def current_user() -> CurrentUser:
    """Local mode: the single reviewer ``$CARLOS_REVIEWER`` (default: the OS user).
    OIDC mode: the logged-in e-mail, writing only if listed in ``[carlos] reviewers``."""
    secrets = _secrets()
    if secrets is None:
        return CurrentUser("", False, "secrets.toml exists but cannot be read; fix it to log in", "oidc", False)
    if "auth" not in secrets:
        name = os.environ.get("CARLOS_REVIEWER", "").strip() or _os_user()
        return CurrentUser(name=name, can_write=True, reason="", mode="local", logged_in=True)
    if not st.user.get("is_logged_in", False):
        return CurrentUser("", False, "log in (sidebar) to record decisions", "oidc", False)
    email = str(st.user.get("email") or "").strip().lower()
    listed = (secrets.get("carlos") or {}).get("reviewers")
    if not listed:
        return CurrentUser(email, False, "no reviewers are listed in secrets.toml [carlos] reviewers", "oidc", True)
    if not review.AccessPolicy.from_list(list(listed)).can_write(email):
        return CurrentUser(email, False, f"{email or 'this account'} is not a listed reviewer (read-only)", "oidc", True)
    return CurrentUser(email, True, "", "oidc", True)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "local reviewer"


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


def sidebar_user() -> CurrentUser:
    """The user box of the sidebar (with log in / log out under OIDC)."""
    user = current_user()
    with st.sidebar:
        if user.mode == "local":
            st.caption(f"Reviewer: **{user.name}** (local mode; set CARLOS_REVIEWER to change)")
        elif not user.logged_in:
            st.caption(f"Read-only: {user.reason}.")
            if st.button("Log in", key="auth_login"):
                _login()
        else:
            role = "reviewer" if user.can_write else "read-only"
            st.caption(f"Signed in as **{user.name}** ({role})")
            if st.button("Log out", key="auth_logout"):
                st.logout()
    return user


def _login() -> None:
    try:
        st.login()
    except Exception as e:  # Authlib missing or a bad [auth] section: explain, never a traceback
        if type(e).__name__ in ("RerunException", "StopException"):
            raise
        st.sidebar.error(
            f"Login is configured but failed: {e}. Check the [auth] section of "
            "secrets.toml and that Authlib is installed (pip install Authlib)."
        )


def write_note(user: CurrentUser) -> None:
    """One line saying why the forms below are disabled, if they are."""
    if not user.can_write:
        st.info(f"Read-only: {user.reason}.")


# -- URL state ---------------------------------------------------------------------------------------
def url_default(key: str, default: T, *, param: str | None = None, parse: Callable[[str], T] | None = None) -> None:
    """Give widget ``key`` its first value on this page: the URL's ``param`` (a shared link,
    a ``st.page_link``) > the value kept from another page > ``default``. Call before
    drawing the widget (with ``key=key`` and no ``value``)."""
    if key in st.session_state:
        return
    raw = st.query_params.get(param) if param else None
    if raw is not None:
        try:
            st.session_state[key] = parse(raw) if parse else raw
            return
        except (ValueError, TypeError, CarlosError):
            st.sidebar.caption(f"Ignored the link's `{param}={raw}`: not a valid value.")
    st.session_state[key] = st.session_state.get(_KEEP + key, default)


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


# -- thresholds sidebar ------------------------------------------------------------------------------
def threshold_sidebar(view: CorpusView, user: CurrentUser | None = None) -> Thresholds:
    """Strength max / Consistency min sliders (starting at the saved thresholds) in the sidebar."""
    saved = review.current_thresholds(get_store())
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
        s_on = st.checkbox("Filter too strong", key="thr_s_on")
        s = st.slider("Strength max (substantiality)", 0.0, s_hi, step=0.05, key="thr_s", disabled=not s_on)
        c_on = st.checkbox("Filter too unstable", key="thr_c_on")
        c = st.slider("Consistency min (volition)", 0.0, c_hi, step=0.001, key="thr_c", format="%.3f", disabled=not c_on)
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


# -- widgets -----------------------------------------------------------------------------------------
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


def representations_table(store: Store, lora_id: str) -> None:
    """Every representation of one LoRA with its percentiles (within its own space) and
    provenance; an explained empty state when it was never characterized."""
    reps = store.representations_of(lora_id)
    if not reps:
        st.info("Not characterized yet: no Direction, Strength or Consistency for this LoRA.")
        return
    rows = []
    for rep in reps:
        pct = load_view(store, rep.embedder).annotated().set_index("lora_id")
        p = pct.loc[lora_id] if lora_id in pct.index else {}
        prov = rep.provenance
        rows.append(
            {
                "space": rep.embedder,
                "Strength": rep.strength,
                "Str pct": p.get("strength_pct"),
                "Consistency": rep.consistency,
                "Cons pct": p.get("consistency_pct"),
                "pairs": rep.n_samples,
                **{k: prov.get(k) for k in ("protocol", "backend", "prompt_set", "steps", "scale", "source")},
                "computed": prov.get("created_at"),
            }
        )
    pct_col = st.column_config.NumberColumn(format="%.0f")
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={
            "Str pct": pct_col,
            "Cons pct": pct_col,
            "Strength": st.column_config.NumberColumn(format="%.3f"),
            "Consistency": st.column_config.NumberColumn(format="%.4f"),
        },
    )
    st.caption("Percentiles: share of the LoRAs in the same space at or below this value.")


def decision_panel(store: Store, lora_id: str, user: CurrentUser) -> None:
    """Claim, then approve / flag / escalate / reopen with a note; read-only with the reason."""
    write_note(user)
    holder = store.claim_holder(lora_id)
    if holder is None:
        if st.button("Claim for review", key="detail_claim", disabled=not user.can_write):
            with explained("claim this LoRA"):
                review.claim(store, lora_id, user.name)
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
            review.decide(store, lora_id, user.name, action, note or None)
            flash("success", f"Recorded: {action} by {user.name}.")
            st.rerun()
    if st.button("Release claim", key="detail_release"):
        with explained("release the claim"):
            review.release(store, lora_id, user.name)
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
            "status": "Review status",
            "nsfw": "NSFW",
            "download_count": st.column_config.NumberColumn("Downloads", format="%d"),
        },
    )


# -- background characterization --------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _background_worker(path: str) -> Any:
    """A worker thread inside the dashboard process (one per store): queued jobs run even
    when no ``python -m carlos worker`` is started. It shares the store's file lock, so an
    external worker can run beside it; whichever claims a job first does it."""
    import threading

    from carlos.characterize.jobs import Worker

    worker = Worker(_open_store(path), worker_id=f"dashboard:{os.getpid()}")
    thread = threading.Thread(target=worker.run, kwargs={"poll_s": 1.0}, daemon=True, name="carlos-dashboard-worker")
    thread.start()
    return thread


def ensure_background_worker() -> None:
    _background_worker(str(default_paths().db_path))
