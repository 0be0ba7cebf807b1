"""Search: the retrievers by name (``retrievers``), the one service every search goes through
(``service``), the serving view of the corpus (``views``), the paper's query direction in full
(``query``), looking a LoRA up by any of its names (``lookup``) and what this machine can run
(``capabilities``).
"""

from __future__ import annotations

from carlos import exports

__all__ = ["SearchService", "SearchConfig", "RETRIEVERS", "corpus_view", "detect"]
__getattr__, __dir__ = exports(
    __name__,
    {
        "SearchService": "service",
        "SearchConfig": "retrievers",
        "RETRIEVERS": "retrievers",
        "corpus_view": "views",
        "detect": "capabilities",
    },
)
