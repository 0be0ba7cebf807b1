"""Retrieval on the real 740-LoRA corpus: textual baselines and text-seeded behaviour search."""

from __future__ import annotations

import numpy as np
import pytest

from carlos.config import Thresholds
from carlos.errors import InvalidInputError, WeightsUnavailableError
from carlos.search.retrievers import SearchConfig
from carlos.search.service import SearchService
from carlos.store.catalog import load_view
from carlos.store.store import Store


@pytest.fixture(scope="module")
def service(real_store: Store) -> SearchService:
    return SearchService(real_store)


def _names(result) -> list[str]:
    return [h.name.lower() for h in result.hits]


@pytest.mark.parametrize("retriever", ["bm25", "text-embedding"])
def test_textual_baselines_are_sensible(service: SearchService, retriever: str) -> None:
    res = service.search("pixel art", SearchConfig(retriever=retriever, top_k=3))
    assert all("pixel" in n for n in _names(res)), _names(res)
    res = service.search("anime", SearchConfig(retriever=retriever, top_k=5))
    assert sum("anime" in n for n in _names(res)) >= 2, _names(res)


def test_behaviour_search_finds_what_text_misses(service: SearchService, real_store: Store) -> None:
    """Query 'pixel art': behaviour search's top 10 holds pixel-art LoRAs that neither textual
    retriever ranks in its top 10, and they sit close to the seeds in direction space."""
    q = "pixel art"
    top = lambda r: {h.lora_id for h in service.search(q, SearchConfig(retriever=r, top_k=10)).hits}  # noqa: E731
    textual = top("bm25") | top("text-embedding")
    beh = service.search(q, SearchConfig(retriever="behaviour", top_k=10))
    assert any("text-seeded" in n for n in beh.notes)
    seeds = beh.info["seeds"]
    assert seeds and all(s in textual or s in {h.lora_id for h in beh.hits} for s in seeds)
    new = [h for h in beh.hits if h.lora_id not in textual]
    assert new, "behaviour search found nothing beyond the textual retrievers"
    view = load_view(real_store)
    m = view.matrix / np.linalg.norm(view.matrix, axis=1, keepdims=True)
    seed_rows = [view.row_of(s) for s in seeds]
    pairwise = (m @ m.T)[np.triu_indices(len(m), 1)]
    close = float(np.quantile(pairwise, 0.95))  # "close": nearer than 95% of corpus pairs
    for h in new:
        closest = float((m[seed_rows] @ m[view.row_of(h.lora_id)]).max())
        assert closest > close, (h.name, closest, close)
    assert any("pixel" in h.name.lower() for h in new), [h.name for h in new]


def test_filters_and_exclusions_are_reported(service: SearchService) -> None:
    res = service.search("style", SearchConfig(retriever="bm25", top_k=5))
    assert res.n_excluded > 0 and res.excluded
    for h in res.excluded:
        assert h.excluded_because and (h.strength > 9.8 or h.consistency < 0.041)
    for h in res.hits:
        assert h.strength <= 9.8 and h.consistency >= 0.041
    loose = service.search("style", SearchConfig(retriever="bm25", top_k=5, thresholds=Thresholds(None, None)))
    assert loose.n_excluded == 0


def test_carlos_without_weights_explains_itself(service: SearchService, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("CARLOS_CLIP_CHECKPOINT", raising=False)
    fresh = SearchService(service.store)
    status = {s.name: s for s in fresh.status()}
    assert not status["carlos"].available and status["bm25"].available
    with pytest.raises(WeightsUnavailableError, match="hf download"):
        fresh.search("pixel art", SearchConfig(retriever="carlos"))


ODD = ["🐉 dragon 🔥", "水墨画", "'; DROP TABLE loras; --", "a " * 300, "Ünïcödé ÇÀFÉ", "x"]


@pytest.mark.parametrize("query", ODD)
@pytest.mark.parametrize("retriever", ["bm25", "behaviour"])
def test_odd_queries_answer_or_explain(service: SearchService, query: str, retriever: str) -> None:
    res = service.search(query, SearchConfig(retriever=retriever, top_k=5))
    assert len(res.hits) <= 5
    assert res.query == " ".join(query.split())


@pytest.mark.parametrize("query", ["", "   ", "\n\t", "\x00\x01"])
def test_empty_queries_are_refused(service: SearchService, query: str) -> None:
    with pytest.raises(InvalidInputError):
        service.search(query, SearchConfig(retriever="bm25"))


def test_query_by_upload_finds_what_it_behaves_like(store_copy: Store) -> None:
    """An upload characterized in the corpus's space (here: Pixel Art XL's direction plus noise,
    standing in for a re-trained copy) is ranked against the corpus by its own direction."""
    from carlos.core.ranking import by_direction, similar

    view = load_view(store_copy)
    rng = np.random.default_rng(0)
    original = view.matrix[view.row_of("civitai:130580")]
    upload = original + rng.normal(scale=0.1 * np.abs(original).mean(), size=original.shape)
    store_copy.loras.upsert([{"lora_id": "sha256:abc", "source": "upload", "name": "suspicious upload"}])
    store_copy.reps.put("sha256:abc", view.embedder, upload, 5.0, 0.1, 4480, {"protocol": "paper", "backend": "sdxl-base-1.0"})
    res = similar(load_view(store_copy), "sha256:abc", thresholds=Thresholds(), top_k=5)
    assert res.hits[0].lora_id == "civitai:130580" and res.hits[0].score > 0.95
    assert all("pixel" in h.name.lower() for h in res.hits)
    with pytest.raises(InvalidInputError, match="cannot be compared"):
        by_direction(view, np.ones(32), thresholds=Thresholds())
