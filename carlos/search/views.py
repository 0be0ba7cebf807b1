"""The serving view of the corpus: the catalog read model with the fastest exact index kernel.

Every search goes through :func:`corpus_view`, so the int8 first pass (from 20 000 LoRAs
on, when torch's fbgemm is there) is what the dashboard, the CLI and the scale benchmark run.
"""

from __future__ import annotations

from carlos.config import CORPUS_EMBEDDER
from carlos.core.view import CorpusView
from carlos.models.int8 import FbgemmInt8
from carlos.store.catalog import load_view
from carlos.store.store import Store

#: One backend object for the process (its availability check is cached).
INT8 = FbgemmInt8()


def corpus_view(store: Store, embedder: str = CORPUS_EMBEDDER) -> CorpusView:
    """The current view of ``embedder`` space for searching (see :func:`carlos.store.catalog.load_view`)."""
    return load_view(store, embedder, int8=INT8)
