"""The pure math of CARLoS: numpy and pandas only, no torch, no store (an import contract checks it).

The representation (Direction, Strength, Consistency), the corpus view as arrays
(``view``), the exact filtered top-k index (``index``), ranking into typed hits
(``ranking``), text-seeded behaviour search (``behaviour``), risk classes and
percentiles (``risk``), what a query is (``query``) and creator-text cleaning (``text``);
intervals of a characterization with prompts as clusters (``uncertainty``, ``intervals``)
and the risk class with its confidence (``confidence``); who may write and the check every
write of the library makes first (``access``).
"""

from __future__ import annotations

from carlos import exports

__all__ = ["summarize", "Representation", "CorpusView", "DirectionIndex", "SearchResult", "RiskPolicy", "QueryDirection"]
__getattr__, __dir__ = exports(
    __name__,
    {
        "summarize": "representation",
        "Representation": "representation",
        "CorpusView": "view",
        "DirectionIndex": "index",
        "SearchResult": "ranking",
        "RiskPolicy": "risk",
        "QueryDirection": "query",
    },
)
