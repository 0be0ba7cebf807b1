"""Who may write: the reviewer list (:class:`AccessPolicy`) and the acting user (:class:`CurrentUser`).

The dashboard builds a ``CurrentUser`` from its login (``app.access``), the CLI from its
options; the review services take it, so the policy lives in the library, not in a button.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class AccessPolicy:
    """Who may write. ``reviewers=None``: everyone who is signed in (local single-user mode)."""

    reviewers: frozenset[str] | None = None

    def can_write(self, user: str | None) -> bool:
        if not user:
            return False
        return self.reviewers is None or user.strip().lower() in self.reviewers

    @classmethod
    def from_list(cls, names: Iterable[str] | None) -> AccessPolicy:
        if names is None:
            return cls(None)
        return cls(frozenset(n.strip().lower() for n in names if n and n.strip()))


@dataclass(frozen=True)
class CurrentUser:
    """Who is using this session and whether they may write (decide, upload, set thresholds)."""

    name: str  # recorded as the reviewer of decisions (the e-mail under OIDC login)
    can_write: bool
    reason: str  # why the session is read-only ("" when it can write)
    mode: str  # "local" (no auth configured) or "oidc"
    logged_in: bool
