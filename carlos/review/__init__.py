"""Review: claims, append-only decisions, thresholds, the queue and exports (``workflow``), the
audit log as one timeline of decisions, claims and threshold changes (``audit``), and who may
write (``access``: the reviewer list, the acting user and the check every write makes).
"""

from __future__ import annotations

from carlos import exports

__all__ = ["AccessPolicy", "CurrentUser", "resolve_policy", "claim", "decide", "release", "audit_log"]
__getattr__, __dir__ = exports(
    __name__,
    {
        "AccessPolicy": "access",
        "CurrentUser": "access",
        "resolve_policy": "access",
        "claim": "workflow",
        "decide": "workflow",
        "release": "workflow",
        "audit_log": "audit",
    },
)
