"""Evaluation of retrievers: diversity metrics (``diversity``), the harness over a query set and
its reports (``harness``) and the paper's top-3 relevance protocol with its judge (``relevance``).
"""

from __future__ import annotations

from carlos import exports

__all__ = ["evaluate", "EvalConfig", "load_queries"]
__getattr__, __dir__ = exports(__name__, {"evaluate": "harness", "EvalConfig": "harness", "load_queries": "harness"})
