"""Page models: each dashboard page's data from one library call, in one store session.

A page calls ``read_<page>(store, …)`` once per render: every store read of that render runs
on one connection (one state of the store, one lock hold of a few milliseconds) and comes
back as a typed, frozen object; what depends only on (data version, thresholds, LoRA) is then
derived outside the store session and remembered per data version (:class:`Memo`), shared by
every session of the process.

Two rules keep this deadlock-free under load: a read never waits on anything another thread
may hold while it holds the store (the in-process caches it touches compute outside their own
locks, and nothing here waits on a Streamlit cache), and the derived, cached work runs after
the store session has ended.
"""

from carlos.pagemodels.common import Basics, Memo, annotated, read_basics

__all__ = ["Basics", "Memo", "annotated", "read_basics"]
