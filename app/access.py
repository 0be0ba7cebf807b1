"""Login -> the acting user: local mode (one reviewer, no login) or Streamlit OIDC with a reviewer list."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

import streamlit as st

from carlos.review.access import AccessPolicy, CurrentUser


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
    if not AccessPolicy.from_list(list(listed)).can_write(email):
        return CurrentUser(email, False, f"{email or 'this account'} is not a listed reviewer (read-only)", "oidc", True)
    return CurrentUser(email, True, "", "oidc", True)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "local reviewer"


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
