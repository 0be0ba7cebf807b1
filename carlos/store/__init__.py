"""The store: every SQL statement of CARLoS, over one DuckDB file.

:class:`Store` (``store.py``) owns the file, its lock, short-lived connections,
migrations (``schema.py``) and the data-version stamp; per-area repositories hold
the SQL: ``store.loras`` (``loras.py``), ``store.reps`` (``representations.py``),
``store.jobs`` (``jobs.py``), ``store.review`` (``review.py``) and ``store.caches``
(``caches.py``). :func:`carlos.store.catalog.load_view` is the read model the
searches and pages use. Nothing outside this package writes SQL.
"""

from __future__ import annotations

from carlos.store.representations import StoredRepresentation
from carlos.store.store import Store

__all__ = ["Store", "StoredRepresentation"]
