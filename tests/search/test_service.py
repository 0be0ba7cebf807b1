"""The CARLoS retriever end to end on the tiny CLIP (same code as the real ViT-B/32 path)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from carlos.config import Thresholds
from carlos.data.prompts import get_prompt_set
from carlos.models.clip import load_clip
from carlos.search.query import query_direction_naive
from carlos.search.retrievers import SearchConfig
from carlos.search.service import SearchService
from carlos.store.store import Store

TINY = SearchConfig(retriever="carlos", clip_model="tiny", top_k=5)


@pytest.fixture(scope="module")
def tiny_clip():
    return load_clip("tiny", device="cpu")


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory, tiny_clip) -> Store:
    """Twenty fake LoRAs in the tiny CLIP's space with chosen Strength/Consistency."""
    store = Store.open(tmp_path_factory.mktemp("tiny") / "t.duckdb")
    rng = np.random.default_rng(0)
    n = 20
    store.loras.upsert([{"lora_id": f"l{i}", "source": "test", "name": f"lora {i}"} for i in range(n)])
    strength = np.linspace(1.0, 12.0, n)
    consistency = np.linspace(0.0, 0.5, n)
    store.reps.put_many(
        [
            {
                "lora_id": f"l{i}",
                "embedder": tiny_clip.embedder_id,
                "direction": rng.normal(size=tiny_clip.dim),
                "strength": float(strength[i]),
                "consistency": float(consistency[i]),
                "n_samples": 4,
                "protocol": "synthetic",
                "backend": "none",
            }
            for i in range(n)
        ]
    )
    return store


@pytest.fixture
def service(tiny_store: Store, tiny_clip) -> SearchService:
    return SearchService(tiny_store, clip_loader=lambda name, ckpt: tiny_clip)


def test_query_direction_equals_naive_recomputation(service: SearchService, tiny_clip) -> None:
    prompts = [p.text for p in get_prompt_set().query_prompts]
    got = service.query_direction("snowfall, cold winter scene", TINY)
    ref = query_direction_naive(tiny_clip, prompts, "snowfall, cold winter scene")
    np.testing.assert_allclose(got.direction, ref.direction, rtol=1e-5, atol=1e-6)
    assert got.n_prompts == 280 and got.method == "kv-cache"


def test_repeated_query_is_a_cache_hit_with_the_same_result(service: SearchService, tiny_store) -> None:
    first = service.search("ukiyo-e woodblock print", TINY)
    assert service.stats["query_cache_misses"] == 1
    again = service.search("ukiyo-e   woodblock print ", TINY)  # same normalized query
    assert service.stats["query_cache_hits"] == 1
    assert [h.lora_id for h in again.hits] == [h.lora_id for h in first.hits]
    # a new process (fresh service) finds it in the store, not recomputing
    other = SearchService(tiny_store, clip_loader=service._clip_loader)
    third = other.search("ukiyo-e woodblock print", TINY)
    assert other.stats == {"query_cache_hits": 1, "query_cache_misses": 0}
    assert [h.score for h in third.hits] == pytest.approx([h.score for h in first.hits], abs=1e-6)
    # a different query is not a collision
    other.search("ukiyo-e woodblock prints", TINY)
    assert other.stats["query_cache_misses"] == 1


def test_filters_exclude_exactly_the_right_loras(service: SearchService, tiny_store) -> None:
    t = Thresholds(strength_max=9.8, consistency_min=0.041)
    res = service.search("celestial beings", SearchConfig(retriever="carlos", clip_model="tiny", top_k=20, thresholds=t))
    frame = tiny_store.reps.corpus_frame("tiny-clip/seed0").set_index("lora_id")
    expected_out = {lid for lid, r in frame.iterrows() if r.strength > 9.8 or r.consistency < 0.041}
    assert {h.lora_id for h in res.hits} == set(frame.index) - expected_out
    assert res.n_excluded == len(expected_out)
    assert {h.lora_id for h in res.excluded} == expected_out
    scores = [h.score for h in res.hits]
    assert scores == sorted(scores, reverse=True)
    assert any("not meaningful" in n for n in res.notes)  # tiny space is labelled


def test_long_query_truncation_is_reported(service: SearchService) -> None:
    long = " ".join(["intricate baroque golden ornament"] * 30)
    res = service.search(long, TINY)
    assert res.info["n_truncated"] == 280
    assert any("truncated" in n for n in res.notes)
    short = service.search("intricate baroque golden ornament", TINY)
    assert short.info["n_truncated"] == 0 and not any("truncated" in n for n in short.notes)


@pytest.mark.parametrize("query", ["🐉🔥", "水墨画 山水", "'; DROP TABLE loras; --", "Ünïcödé"])
def test_odd_queries(service: SearchService, tiny_store: Store, query: str) -> None:
    before = tiny_store.table_counts()["loras"]
    res = service.search(query, TINY)
    assert len(res.hits) == 5 and np.isfinite([h.score for h in res.hits]).all()
    assert tiny_store.table_counts()["loras"] == before


class CountingEmbedder:
    """A deterministic text embedder that records how many texts it embedded."""

    model_id = "counting-test"

    def __init__(self) -> None:
        self.embedded: list[int] = []

    def embed(self, texts: list[str], progress: Any = None) -> np.ndarray:
        self.embedded.append(len(texts))
        if progress is not None:
            progress(len(texts), len(texts))
        return np.asarray([[len(t), t.count("a"), t.count("e"), 1.0] for t in texts], dtype=np.float32)


def test_the_text_matrix_embeds_only_new_texts(store_copy: Store) -> None:
    """An upload joining the corpus (a new data version) costs one embedding, not the whole corpus's."""
    from carlos.search.views import corpus_view

    emb = CountingEmbedder()
    service = SearchService(store_copy, text_embedder_factory=lambda model: emb)
    first, _ = service.text_matrix(corpus_view(store_copy), None)
    assert emb.embedded == [740]
    rep = store_copy.reps.of("civitai:130580")[0]
    store_copy.loras.upsert([{"lora_id": "upload:new", "source": "upload", "name": "a new upload"}])
    store_copy.reps.put("upload:new", rep.embedder, rep.direction, 2.0, 0.1, 70, {"protocol": "quick", "backend": "sdxl"})
    view = corpus_view(store_copy)
    second, _ = service.text_matrix(view, None)
    assert emb.embedded == [740, 1] and second.shape == (741, 4)
    fresh = SearchService(store_copy, text_embedder_factory=lambda model: emb).text_matrix(view, None)[0]
    assert emb.embedded == [740, 1] and np.array_equal(fresh, second)  # a restarted process embeds nothing
    with store_copy.session() as con:
        con.execute("DELETE FROM text_embeddings")
    scratch = SearchService(store_copy, text_embedder_factory=lambda model: emb).text_matrix(view, None)[0]
    assert emb.embedded == [740, 1, 741] and np.array_equal(scratch, second)  # the same as embedding everything


def test_prepared_text_index_spares_the_first_search(store_copy: Store) -> None:
    """``corpus import`` embeds the descriptions ahead: a dashboard process's first text-embedding
    search then embeds nothing but its query, and preparing again does nothing."""
    emb = CountingEmbedder()
    seen: list[tuple[int, int]] = []
    model_id, embedded = SearchService(store_copy, text_embedder_factory=lambda model: emb).prepare_text_index(
        progress=lambda done, total: seen.append((done, total))
    )
    assert (model_id, embedded) == ("counting-test", 740) and emb.embedded == [740] and seen == [(740, 740)]
    assert SearchService(store_copy, text_embedder_factory=lambda model: emb).prepare_text_index() == ("counting-test", 0)
    fresh = SearchService(store_copy, text_embedder_factory=lambda model: emb)
    fresh.search("pixel art", SearchConfig(retriever="text-embedding", top_k=3))
    assert emb.embedded == [740, 1]  # the query alone


def test_a_new_data_version_with_the_same_texts_keeps_the_textual_indexes(store_copy: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's result (another space: a new data version, the same LoRA texts) rebuilds neither the
    BM25 index nor the text matrix, and cleans no text again; a changed description is cleaned alone
    and searched at once."""
    import carlos.core.text as text
    from carlos.search.views import corpus_view

    cleaned: list[str | None] = []
    clean = text.document_text
    monkeypatch.setattr(text, "document_text", lambda name, desc: cleaned.append(name) or clean(name, desc))
    emb = CountingEmbedder()
    service = SearchService(store_copy, text_embedder_factory=lambda model: emb)
    view = corpus_view(store_copy)
    service.bm25_scores(view, "pixel art")
    matrix, _ = service.text_matrix(view, None)
    index, n_cleaned = service._bm25[view.data_version], len(cleaned)
    assert 0 < n_cleaned <= 740 and emb.embedded == [740]  # LoRAs with the same text share one cleaning

    rep = store_copy.reps.of("civitai:130580")[0]
    store_copy.reps.put("civitai:130580", "tiny-space", rep.direction[:8], 2.0, 0.1, 70, {"protocol": "quick", "backend": "tiny"})
    again = corpus_view(store_copy)
    assert again.data_version != view.data_version
    service.bm25_scores(again, "pixel art")
    assert service._bm25[again.data_version] is index and len(cleaned) == n_cleaned
    assert service.text_matrix(again, None)[0] is matrix and emb.embedded == [740]

    with store_copy.transaction() as con:
        con.execute("UPDATE loras SET description = 'zyxwquartz glaze studies' WHERE lora_id = 'civitai:130580'")
        store_copy.bump(con)
    changed = corpus_view(store_copy)
    scores = service.bm25_scores(changed, "zyxwquartz")
    assert len(cleaned) == n_cleaned + 1  # only the changed text
    assert changed.ids[int(np.argmax(scores))] == "civitai:130580" and np.count_nonzero(scores) == 1
    assert emb.embedded == [740] and service.text_matrix(changed, None)[0].shape == matrix.shape
    assert emb.embedded == [740, 1]  # the text matrix embeds the changed text alone
