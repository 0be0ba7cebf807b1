"""The Search page's results, once per (data version, query, settings), shared by every session.

A search is a pure function of the corpus view and its inputs, so the page's reruns (every widget
change) and other sessions asking the same question get the ranking from memory.
"""

from __future__ import annotations

from typing import Any

from carlos.core.query import normalize_query
from carlos.core.ranking import SearchResult
from carlos.core.view import CorpusView
from carlos.pagemodels.common import Memo, view_key
from carlos.search.retrievers import SearchConfig

_RESULTS = Memo(256)


def search(service: Any, view: CorpusView, query: str, config: SearchConfig) -> SearchResult:
    """``service.search(query, config)`` (a :class:`carlos.search.service.SearchService`) over
    ``view``'s state, remembered per data version; errors are not remembered."""
    return _RESULTS.get((*view_key(view), normalize_query(query), config), lambda: service.search(query, config))
