"""What a search writes: a CARLoS query adds one entry to the bounded query-direction cache
and nothing else; a textual search writes nothing. Any visitor may search, so no query can
grow the store past the cache's limits."""

from __future__ import annotations

import numpy as np
import pytest

from carlos.config import CacheLimits
from carlos.models.clip import load_clip
from carlos.search.retrievers import SearchConfig
from carlos.search.service import SearchService
from carlos.store.store import Store

TINY = SearchConfig(retriever="carlos", clip_model="tiny", top_k=5)


@pytest.fixture(scope="module")
def tiny_clip():
    return load_clip("tiny", device="cpu")


@pytest.fixture
def store(tmp_path, tiny_clip) -> Store:
    store = Store.open(tmp_path / "s.duckdb")
    rng = np.random.default_rng(3)
    store.loras.upsert([{"lora_id": f"l{i}", "source": "test", "name": f"lora {i} pixel"} for i in range(12)])
    store.reps.put_many(
        [
            {"lora_id": f"l{i}", "embedder": tiny_clip.embedder_id, "direction": rng.normal(size=tiny_clip.dim), "strength": 2.0}
            | {"consistency": 0.2, "n_samples": 4}
            for i in range(12)
        ]
    )
    return store


def test_queries_only_fill_the_bounded_cache(store: Store, tiny_clip) -> None:
    store.caches.limits = CacheLimits(vector_max_entries=2)
    service = SearchService(store, clip_loader=lambda name, ckpt: tiny_clip, memory_cache_size=1)
    before, version = store.table_counts(), store.data_version()
    queries = ["pixel art", "neon city", "watercolour", "pixel art"]
    for q in queries:
        assert len(service.search(q, TINY).hits) == 5
    after = store.table_counts()
    changed = {t for t in after if after[t] != before.get(t)}
    assert changed == {"vector_cache"} and after["vector_cache"] == 2  # capped: 3 distinct queries
    assert store.data_version() == version
    usage = store.caches.vector_usage()
    assert usage.entries == 2 and usage.bytes <= usage.max_bytes


def test_a_textual_search_writes_nothing(store_copy: Store) -> None:
    before = store_copy.table_counts()
    res = SearchService(store_copy).search("pixel art", SearchConfig(retriever="bm25", top_k=3))
    assert len(res.hits) == 3 and store_copy.table_counts() == before
