"""Who may write, for the CLI and the dashboard: the reviewer list (:class:`AccessPolicy`, read
by :func:`resolve_policy` from ``[carlos] reviewers`` of the secrets files or
``$CARLOS_REVIEWERS``) and the acting user (:class:`CurrentUser`).

The definitions live in :mod:`carlos.core.access`, below the services, so that the review
workflow and characterization (uploads, job cancels) check the same policy with
:func:`authorize` before they write anything; this module is their public face.
"""

from __future__ import annotations

from carlos.core.access import (
    REVIEWER_ENV,
    REVIEWERS_ENV,
    AccessPolicy,
    CurrentUser,
    authorize,
    default_secrets_files,
    local_identity,
    resolve_policy,
)

__all__ = [
    "REVIEWER_ENV",
    "REVIEWERS_ENV",
    "AccessPolicy",
    "CurrentUser",
    "authorize",
    "default_secrets_files",
    "local_identity",
    "resolve_policy",
]
