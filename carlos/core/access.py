"""Who may write: the reviewer list (:class:`AccessPolicy`, read by :func:`resolve_policy`), the
acting user (:class:`CurrentUser`) and the check every write of the library makes first
(:func:`authorize`).

It sits below the services so that the review workflow (claims, decisions, thresholds) and
characterization (uploads, job cancels) check the one policy; ``carlos.review.access`` is its
public face for the CLI and the dashboard. Plain Python (``tomllib``), no Streamlit: the
library reads the reviewer list itself and never trusts a ``can_write`` flag a caller set.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carlos.config import default_secrets_files
from carlos.errors import InvalidInputError, PermissionDeniedError

#: Comma-separated reviewer identities; when set and non-empty it replaces ``[carlos] reviewers``.
REVIEWERS_ENV = "CARLOS_REVIEWERS"
#: The identity of a local session (dashboard without login, CLI without ``--reviewer``).
REVIEWER_ENV = "CARLOS_REVIEWER"


@dataclass(frozen=True)
class CurrentUser:
    """Who acts. Every write of the library takes one and checks its ``name`` against the
    policy; ``can_write`` and ``reason`` only tell a UI what to show (disabled widgets)."""

    name: str  # recorded as the reviewer (the e-mail under OIDC login)
    can_write: bool  # what the UI believes; the checks resolve the policy themselves
    reason: str  # why the session is read-only ("" when it can write)
    mode: str  # "local" (no login configured), "oidc" (Streamlit login) or "cli"
    logged_in: bool
    #: The secrets files this identity's session reads (the dashboard: Streamlit's
    #: ``secrets.files``; the CLI: ``--secrets``); None: the default locations.
    secrets_files: tuple[str, ...] | None = None

    @classmethod
    def local(cls, name: str, *, mode: str = "local", secrets_files: Iterable[str | Path] | None = None) -> CurrentUser:
        """An identified user of this machine (CLI, local dashboard, tests); may write only
        if the policy resolved at each write says so."""
        files = None if secrets_files is None else tuple(str(f) for f in secrets_files)
        return cls(name=name, can_write=True, reason="", mode=mode, logged_in=True, secrets_files=files)


@dataclass(frozen=True)
class AccessPolicy:
    """Who may write. ``reviewers=None``: local mode, anyone identified; a set: only those
    (compared case-insensitively); ``error``: the configuration could not be read, nobody writes."""

    reviewers: frozenset[str] | None = None
    source: str = "local mode: no reviewer list configured"  # where the list came from (for messages)
    login: bool = False  # the secrets have an [auth] section: the dashboard asks for an OIDC login
    error: str | None = None  # set when failing closed

    @classmethod
    def from_list(cls, names: Iterable[str] | None, *, source: str = "the reviewer list", login: bool = False) -> AccessPolicy:
        if names is None:
            return cls(None, login=login)
        return cls(frozenset(n.strip().casefold() for n in names if n and n.strip()), source=source, login=login)

    @property
    def local(self) -> bool:
        """True in local mode (no reviewer list: anyone identified may write)."""
        return self.reviewers is None and self.error is None

    def why_not(self, user: CurrentUser | str | None) -> str | None:
        """None when ``user`` may write; otherwise the reason, for a message."""
        if self.error is not None:
            return f"{self.error}; nobody may write until it is fixed"
        name = _name_of(user)
        if not name:
            return "not logged in (log in first)"
        if self.reviewers is None:
            return None
        if not self.reviewers:
            return f"no reviewers are listed ({self.source})"
        if name.casefold() not in self.reviewers:
            return f"not a listed reviewer ({self.source})"
        return None

    def can_write(self, user: CurrentUser | str | None) -> bool:
        return self.why_not(user) is None

    def check(self, user: CurrentUser, action: str) -> str:
        """The identity to record for ``action``, or :class:`PermissionDeniedError` naming the
        user and the action."""
        why = self.why_not(user)
        if why is not None:
            named = user.strip() if isinstance(user, str) else (user.name.strip() if user is not None else "")
            who = _name_of(user) or (f"{named} (not logged in)" if named else "a visitor who is not logged in")
            raise PermissionDeniedError(f"{who} may not {action}: {why}")
        return _name_of(user)


def _name_of(user: CurrentUser | str | None) -> str:
    if user is None:
        return ""
    if isinstance(user, str):
        return user.strip()
    return user.name.strip() if user.logged_in and user.name else ""


def resolve_policy(secrets_files: Iterable[str | Path] | None = None, *, env: Mapping[str, str] | None = None) -> AccessPolicy:
    """The reviewer list, read by the library itself (CLI and dashboard alike).

    1. ``$CARLOS_REVIEWERS`` (comma-separated), when set and not empty;
    2. else ``[carlos] reviewers`` of the secrets files (``secrets_files``, default
       :func:`default_secrets_files`; merged like Streamlit does, later files win);
    3. else, if the secrets have an ``[auth]`` section, nobody (login without a reviewer list);
    4. else local mode: anyone identified may write.

    A secrets file that exists but cannot be read or parsed, or a malformed ``[carlos]``
    section, fails closed: nobody may write (whatever the environment says).
    """
    env = os.environ if env is None else env
    files = default_secrets_files() if secrets_files is None else tuple(Path(f).expanduser() for f in secrets_files)
    merged: dict[str, Any] = {}
    listed_in = ""
    for f in files:
        if not f.exists():
            continue
        try:
            data = tomllib.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            return AccessPolicy(frozenset(), source=str(f), error=f"the secrets file {f} cannot be read ({e})")
        if "carlos" in data:
            listed_in = str(f)
        merged.update(data)
    login = "auth" in merged
    from_env = env.get(REVIEWERS_ENV, "")
    section = merged.get("carlos", {})
    if not isinstance(section, dict):
        return AccessPolicy(frozenset(), source=listed_in, login=login, error=f"[carlos] in {listed_in} is not a table")
    listed = section.get("reviewers")
    if listed is not None and not (isinstance(listed, list) and all(isinstance(n, str) for n in listed)):
        return AccessPolicy(frozenset(), source=listed_in, login=login, error=f"[carlos] reviewers in {listed_in} is not a list of e-mails")
    if from_env.strip():
        return AccessPolicy.from_list(from_env.split(","), source=f"${REVIEWERS_ENV}", login=login)
    if listed is not None:
        return AccessPolicy.from_list(listed, source=f"[carlos] reviewers in {listed_in}", login=login)
    if login:
        return AccessPolicy(frozenset(), source="login is configured but secrets.toml lists no [carlos] reviewers", login=True)
    return AccessPolicy(None)


def authorize(user: CurrentUser, action: str, policy: AccessPolicy | None = None) -> str:
    """The check before every write: the identity to record, or PermissionDeniedError.

    ``policy``: for programs that own their store (benchmarks, tests); by default the
    policy is resolved now from ``user.secrets_files`` and the environment."""
    if not isinstance(user, CurrentUser):
        raise InvalidInputError(f"to {action}, pass the acting user as a CurrentUser, not {type(user).__name__} {user!r}")
    policy = resolve_policy(user.secrets_files) if policy is None else policy
    return policy.check(user, action)


def local_identity(env: Mapping[str, str] | None = None) -> str:
    """Who a local session is: ``$CARLOS_REVIEWER``, else the OS user name."""
    env = os.environ if env is None else env
    name = env.get(REVIEWER_ENV, "").strip()
    if name:
        return name
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "local reviewer"
