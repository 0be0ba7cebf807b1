"""Login -> the acting user: local mode (one reviewer, no login) or Streamlit OIDC with a reviewer list.

Whether the session may write comes from the library's policy
(:func:`carlos.review.access.resolve_policy`) over the same secrets files Streamlit reads
(its ``secrets.files`` option), so the sidebar, the disabled widgets and the check every
service makes agree. ``can_write`` here only drives the UI: each write re-checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from carlos.review.access import CurrentUser, local_identity, resolve_policy


def secrets_files() -> tuple[str, ...]:
    """The secrets files of this server (``secrets.files``: ``--secrets.files`` or the defaults).

    Page tests replace this function (AppTest's ``at.secrets`` reach ``st.secrets`` only,
    not the files the library reads)."""
    return tuple(str(f) for f in (st.get_option("secrets.files") or []))


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
    """Local mode: the single reviewer ``$CARLOS_REVIEWER`` (default: the OS user), writing
    unless ``$CARLOS_REVIEWERS`` lists others. OIDC mode: the logged-in e-mail, writing only
    if the reviewer list has it."""
    files = secrets_files()
    policy = resolve_policy(files)
    secrets = _secrets()
    if secrets is None or policy.error:
        return CurrentUser("", False, "secrets.toml exists but cannot be read; fix it to log in", "oidc", False, files)
    if "auth" not in secrets:
        name = local_identity()
        why = policy.why_not(name)
        return CurrentUser(name, why is None, why or "", "local", True, files)
    if not st.user.get("is_logged_in", False):
        return CurrentUser("", False, "log in (sidebar) to record decisions", "oidc", False, files)
    email = str(st.user.get("email") or "").strip().lower()
    why = policy.why_not(email)
    if why is None:
        return CurrentUser(email, True, "", "oidc", True, files)
    if policy.reviewers is not None and not policy.reviewers:
        reason = "no reviewers are listed in secrets.toml [carlos] reviewers"
    else:
        reason = f"{email or 'this account'} is not a listed reviewer (read-only)"
    return CurrentUser(email, False, reason, "oidc", True, files)


def sidebar_user() -> CurrentUser:
    """The user box of the sidebar (with log in / log out under OIDC)."""
    user = current_user()
    with st.sidebar:
        if user.mode == "local":
            role = "" if user.can_write else f"; read-only: {user.reason}"
            st.caption(f"Reviewer: **{user.name}** (local mode; set CARLOS_REVIEWER to change{role})")
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
