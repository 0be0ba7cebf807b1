"""Review: claims, append-only decisions, thresholds, the queue and exports (``workflow``), and
who may write (``access``: the reviewer list and the acting user).
"""

from __future__ import annotations

from carlos import exports

__all__ = ["AccessPolicy", "CurrentUser", "claim", "decide", "release"]
__getattr__, __dir__ = exports(
    __name__, {"AccessPolicy": "access", "CurrentUser": "access", "claim": "workflow", "decide": "workflow", "release": "workflow"}
)
