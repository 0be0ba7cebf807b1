"""Benchmarks (``python -m carlos bench query|scale|characterize``): each side measured in one
run (``query``, ``scale``, ``characterize`` with their ``*_report`` tables), shared pieces in
``common``, and synthetic corpora shaped like the released one (``synthetic``).
"""

from __future__ import annotations

from carlos import exports

__all__ = ["run_query_bench", "run_scale_bench", "run_characterize_bench"]
__getattr__, __dir__ = exports(__name__, {"run_query_bench": "query", "run_scale_bench": "scale", "run_characterize_bench": "characterize"})
