"""One entry point for every retriever, shared by the CLI and the pages.

* ``carlos``: the paper's method. The query becomes a CLIP text direction
  (mean over the query prompts of t(p' + " " + q) - t(p')) matched by cosine to
  LoRA directions; needs the CLIP text encoder of the corpus's space.
* ``bm25`` and ``text-embedding``: textual baselines over name + description.
* ``behaviour``: text-seeded behaviour search. Without CLIP, the LoRAs that the
  textual retrievers rank highest become seeds; their directions, weighted by
  text score and trimmed of outliers, form a query direction that ranks the
  whole corpus by what the LoRAs *do*.

Every retriever ends in :func:`carlos.core.ranking.rank`, so filters, exclusion
reasons and the result type are the same everywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from carlos.config import CORPUS_EMBEDDER
from carlos.core.ranking import SearchResult, rank, rank_direction
from carlos.core.view import CorpusView
from carlos.errors import WeightsUnavailableError
from carlos.search.retrievers import LABELS, RetrieverStatus, SearchConfig
from carlos.search.views import corpus_view
from carlos.store.store import Store

log = logging.getLogger(__name__)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


class SearchService:
    """Holds the models and in-process caches; thread-safe for the dashboard.

    ``clip_loader(name, checkpoint)`` and ``text_embedder_factory(model)`` are
    injectable so tests run the very same code on tiny local models.
    """

    def __init__(
        self,
        store: Store,
        *,
        clip_loader: Callable[[str, str | None], Any] | None = None,
        text_embedder_factory: Callable[[str | None], Any] | None = None,
        memory_cache_size: int = 256,
    ) -> None:
        self.store = store
        self._clip_loader = clip_loader or _default_clip_loader
        self._text_factory = text_embedder_factory or _default_text_embedder
        self._lock = threading.RLock()
        self._clips: dict[tuple[str, str | None], Any] = {}
        self._prefix: dict[tuple[str, str], Any] = {}
        self._texts: dict[str | None, Any] = {}
        self._bm25: dict[int, Any] = {}
        self._text_matrices: dict[tuple[int, str, str | None], tuple[np.ndarray, str]] = {}
        # a worker's result changes the data version but rarely a LoRA's text: documents are cleaned
        # once per raw text, and the BM25 index and text matrices kept while the documents are the same
        self._docs: tuple[int, tuple[str, ...], list[str]] | None = None  # (data version, ids, documents)
        self._cleaned: dict[tuple[str | None, str | None], str] = {}
        self._bm25_docs: tuple[tuple[str, ...], list[str]] | None = None
        self._matrix_docs: dict[tuple[str, str | None], tuple[tuple[str, ...], list[str], tuple[np.ndarray, str]]] = {}
        self._memo: OrderedDict[str, Any] = OrderedDict()
        self._memo_size = memory_cache_size
        self.stats = {"query_cache_hits": 0, "query_cache_misses": 0}

    # -- availability ------------------------------------------------------------------------
    def status(self, config: SearchConfig | None = None) -> list[RetrieverStatus]:
        """Which retrievers work right now with ``config``'s models, and why not."""
        from carlos.search import capabilities

        config = config or SearchConfig()
        clip = capabilities.clip_weights(config.clip_model, config.clip_checkpoint)
        text = capabilities.text_model(config.text_model)
        ok = {"carlos": clip, "behaviour": None, "bm25": None, "text-embedding": text}
        return [
            RetrieverStatus(name, LABELS[name], cap is None or cap.available, "always available" if cap is None else cap.detail)
            for name, cap in ok.items()
        ]

    # -- entry point ---------------------------------------------------------------------------
    def search(self, query: str, config: SearchConfig | None = None) -> SearchResult:
        """Rank the corpus for ``query`` with ``config.retriever``."""
        from carlos.core.query import normalize_query

        config = config or SearchConfig()
        q = normalize_query(query)
        if config.retriever == "carlos":
            return self._search_carlos(q, config)
        view = corpus_view(self.store, CORPUS_EMBEDDER)
        if config.retriever == "bm25":
            scores = self.bm25_scores(view, q)
            return rank(view, scores, retriever="bm25", query=q, thresholds=config.thresholds, top_k=config.top_k)
        if config.retriever == "text-embedding":
            scores, model_id = self.text_scores(view, q, config.text_model)
            return rank(
                view,
                scores,
                retriever="text-embedding",
                query=q,
                thresholds=config.thresholds,
                top_k=config.top_k,
                info={"text_model": model_id},
            )
        return self._search_behaviour(view, q, config)

    # -- CARLoS --------------------------------------------------------------------------------
    def clip(self, config: SearchConfig) -> Any:
        key = (config.clip_model, config.clip_checkpoint)
        with self._lock:
            if key not in self._clips:
                self._clips[key] = self._clip_loader(*key)
            return self._clips[key]

    def query_direction(self, query: str, config: SearchConfig | None = None) -> Any:
        """The query's CLIP direction, from memory, the store's cache, or computed (KV cache)."""
        from carlos.core.query import QueryDirection, normalize_query
        from carlos.data.prompts import get_prompt_set

        config = config or SearchConfig()
        q = normalize_query(query)
        clip = self.clip(config)
        pset = get_prompt_set(config.prompt_set)
        prompts = [p.text for p in pset.query_prompts]
        key = _key("query-direction", clip.embedder_id, pset.content_hash, q)
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                self.stats["query_cache_hits"] += 1
                return self._memo[key]
        cached = self.store.caches.get_vector("query-direction", key)
        if cached is not None and cached[1].get("query") == q:
            vec, info = cached
            qd = QueryDirection(
                query=q,
                direction=vec,
                n_prompts=info["n_prompts"],
                n_truncated=info["n_truncated"],
                query_tokens=info["query_tokens"],
                embedder_id=clip.embedder_id,
                prompts_hash=pset.content_hash,
                method=info["method"],
                n_reencoded=info.get("n_reencoded", 0),
            )
            self.stats["query_cache_hits"] += 1
        else:
            from carlos.models.prefix_cache import build_prefix_cache, query_direction_cached

            pkey = (clip.embedder_id, pset.content_hash)
            with self._lock:
                if pkey not in self._prefix:
                    self._prefix[pkey] = build_prefix_cache(clip, prompts, prompts_hash=pset.content_hash)
                cache = self._prefix[pkey]
            qd = query_direction_cached(cache, q)
            info = {
                "query": q,
                "n_prompts": qd.n_prompts,
                "n_truncated": qd.n_truncated,
                "query_tokens": qd.query_tokens,
                "method": qd.method,
                "n_reencoded": qd.n_reencoded,
                "prompt_set": pset.id,
            }
            self.store.caches.put_vector("query-direction", key, qd.direction, info)
            self.stats["query_cache_misses"] += 1
        with self._lock:
            self._memo[key] = qd
            while len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return qd

    def _search_carlos(self, q: str, config: SearchConfig) -> SearchResult:
        clip = self.clip(config)
        view = corpus_view(self.store, clip.embedder_id)
        qd = self.query_direction(q, config)
        notes = []
        if qd.n_truncated:
            notes.append(
                f"query truncated: {qd.n_truncated} of {qd.n_prompts} prompt+query texts exceeded "
                f"CLIP's {clip.context_length}-token window; the end of the query was cut there"
            )
        if clip.embedder_id != CORPUS_EMBEDDER:
            notes.append(f"space {clip.embedder_id}: a test/demo CLIP, scores are not meaningful")
        return rank_direction(
            view,
            qd.direction,
            retriever="carlos",
            query=q,
            thresholds=config.thresholds,
            top_k=config.top_k,
            notes=notes,
            info={"embedder": clip.embedder_id, "n_prompts": qd.n_prompts, "n_truncated": qd.n_truncated, "query_tokens": qd.query_tokens},
        )

    # -- textual -------------------------------------------------------------------------------
    def _documents(self, view: CorpusView) -> list[str]:
        """Every LoRA's cleaned text in ``view``'s order, read once per data version; a text is
        cleaned (HTML parsing, normalization: ~0.7 ms each) only when it is new or changed."""
        from carlos.core.text import document_text

        ids = tuple(view.ids)
        with self._lock:
            if self._docs is not None and self._docs[:2] == (view.data_version, ids):
                return self._docs[2]
        docs = self.store.loras.text_documents().set_index("lora_id")
        docs = docs.reindex(list(ids))
        text = [[v if isinstance(v, str) else None for v in docs[c]] for c in ("name", "description", "folder_name")]  # NULL: NaN
        raw = [(n if n and n.strip() else f, d) for n, d, f in zip(*text)]
        with self._lock:
            cleaned = self._cleaned if len(self._cleaned) <= 2 * len(raw) + 64 else {}  # forget texts long gone
            out = [cleaned[r] if r in cleaned else cleaned.setdefault(r, document_text(*r)) for r in raw]
            self._cleaned = cleaned
            self._docs = (view.data_version, ids, out)
        return out

    def bm25_scores(self, view: CorpusView, q: str) -> np.ndarray:
        from carlos.models.bm25 import BM25Index

        with self._lock:
            index = self._bm25.get(view.data_version)
            if index is None:
                docs, ids = self._documents(view), tuple(view.ids)
                old = self._bm25_docs
                index = next(iter(self._bm25.values())) if self._bm25 and old == (ids, docs) else BM25Index.build(docs)
                self._bm25, self._bm25_docs = {view.data_version: index}, (ids, docs)
        return index.scores(q)

    def text_embedder(self, model: str | None) -> Any:
        with self._lock:
            if model not in self._texts:
                self._texts[model] = self._text_factory(model)
            return self._texts[model]

    def text_matrix(self, view: CorpusView, model: str | None) -> tuple[np.ndarray, str]:
        """Embeddings of every LoRA's text, computed once and stored (and kept in memory
        for the current corpus version)."""
        key = (view.data_version, view.embedder, model)
        with self._lock:
            if key in self._text_matrices:
                return self._text_matrices[key]
        ids, docs = tuple(view.ids), self._documents(view)
        with self._lock:
            same = self._matrix_docs.get((view.embedder, model))
        result = same[2] if same is not None and same[:2] == (ids, docs) else self._text_matrix(view, model)[:2]
        with self._lock:
            self._text_matrices = {key: result}
            self._matrix_docs = {(view.embedder, model): (ids, docs, result)}
        return result

    def prepare_text_index(
        self, view: CorpusView | None = None, model: str | None = None, progress: Callable[[int, int], None] | None = None
    ) -> tuple[str, int]:
        """Embed and store every LoRA description not stored yet, so that no moderator's first
        text-embedding search waits for it (740 texts: ~20 s on 2 cores); returns (model id, texts
        embedded now). Raises :class:`WeightsUnavailableError` when the text model is absent."""
        view = view if view is not None else corpus_view(self.store, CORPUS_EMBEDDER)
        _, model_id, embedded = self._text_matrix(view, model, progress)
        return model_id, embedded

    def _text_matrix(
        self, view: CorpusView, model: str | None, progress: Callable[[int, int], None] | None = None
    ) -> tuple[np.ndarray, str, int]:
        emb = self.text_embedder(model)
        docs = self._documents(view)
        hashes = [hashlib.sha256(d.encode("utf-8")).hexdigest()[:16] for d in docs]
        stored = self.store.caches.get_text_matrix(emb.model_id)
        known: dict[tuple[str, str], np.ndarray] = {}  # (lora_id, text hash) -> its stored embedding
        if stored is not None:
            ids, old_hashes, old = stored
            known = {(i, h): old[k] for k, (i, h) in enumerate(zip(ids, old_hashes))}
        missing = [k for k, (lid, h) in enumerate(zip(view.ids, hashes)) if (lid, h) not in known]
        if not missing and stored is not None and len(known) == len(docs):
            return np.stack([known[(lid, h)] for lid, h in zip(view.ids, hashes)]), emb.model_id, 0
        # only new or changed texts are embedded: an upload joining the corpus costs one text, not all of them
        log.info("embedding %d of %d LoRA descriptions with %s (stored)", len(missing), len(docs), emb.model_id)
        fresh = dict(zip(missing, emb.embed([docs[k] for k in missing], progress=progress))) if missing else {}
        matrix = np.stack([fresh[k] if k in fresh else known[(lid, h)] for k, (lid, h) in enumerate(zip(view.ids, hashes))])
        order = np.argsort(view.ids)
        self.store.caches.put_text_matrix(emb.model_id, [view.ids[i] for i in order], [hashes[i] for i in order], matrix[order])
        return matrix, emb.model_id, len(missing)

    def text_scores(self, view: CorpusView, q: str, model: str | None) -> tuple[np.ndarray, str]:
        matrix, model_id = self.text_matrix(view, model)
        return matrix @ self._text_query(q, model, model_id), model_id

    def _text_query(self, q: str, model: str | None, model_id: str) -> np.ndarray:
        """The query's text embedding, remembered like CLIP query directions (a page reruns its
        search on every widget change; the sentence model costs ~50-80 ms a query on 2 cores)."""
        key = _key("text-query", model_id, q)
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]  # type: ignore[no-any-return]
        qv = self.text_embedder(model).embed([q])[0]
        with self._lock:
            self._memo[key] = qv
            while len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return qv

    # -- behaviour (text-seeded) ---------------------------------------------------------------
    def _search_behaviour(self, view: CorpusView, q: str, config: SearchConfig) -> SearchResult:
        from carlos.core.behaviour import seed_direction, textual_seed_scores

        sources: dict[str, np.ndarray] = {"bm25": self.bm25_scores(view, q)}
        notes = []
        try:
            sources["text-embedding"] = self.text_scores(view, q, config.text_model)[0]
        except WeightsUnavailableError as e:
            notes.append(f"text-embedding seeds unavailable ({str(e).splitlines()[0]}); BM25 only")
        fused = textual_seed_scores(sources)
        seeds = seed_direction(view, fused, config.thresholds, n_seeds=config.seeds, min_cos=config.seed_min_cos)
        notes.insert(
            0,
            "text-seeded behaviour search: the query direction is formed from the "
            f"directions of {len(seeds.used)} LoRAs whose names/descriptions match "
            f"({len(seeds.trimmed)} outliers trimmed), then the corpus is ranked by what "
            "LoRAs do",
        )
        if seeds.direction is None:
            return replace(
                rank(view, np.full(len(view), np.nan), retriever="behaviour", query=q, thresholds=config.thresholds, top_k=config.top_k),
                notes=[f"no LoRA name or description matches {q!r}, so there is no seed to form a behaviour direction from"],
            )
        return rank_direction(
            view,
            seeds.direction,
            retriever="behaviour",
            query=q,
            thresholds=config.thresholds,
            top_k=config.top_k,
            notes=notes,
            info={"seeds": seeds.used, "trimmed": seeds.trimmed, "seed_weights": seeds.weights},
        )


def _default_clip_loader(name: str, checkpoint: str | None) -> Any:
    from carlos.models.clip import load_clip

    return load_clip(name, checkpoint=checkpoint)


def _default_text_embedder(model: str | None) -> Any:
    from carlos.models.sentence import TextEmbedder

    return TextEmbedder(model)
