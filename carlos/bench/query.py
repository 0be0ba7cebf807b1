"""Benchmark: query directions, the authors' shipped procedure against the prefix KV cache.

Side by side in one process, per query:

* **shipped** (the main reference): what the authors' release runs (PAPER.md, "Query
  direction as shipped"): the 280 query prompts and the 280 ``prompt + " " + query`` texts
  encoded as two batches, each padded to its longest text
  (:func:`carlos.search.query.query_direction_shipped`), 560 encodings per query;
* **77-padded**: the same 560 texts padded to the full 77-token window, in batches of
  ``ref_batch`` (:func:`carlos.search.query.query_direction_naive`), a second row;
* **cold**: :func:`carlos.models.prefix_cache.query_direction_cached` against a prefix cache
  built once per prompt set (its build time is reported apart): a query runs only its own
  tokens and end token at each prompt's end;
* **warm**: the same query again through :class:`carlos.search.service.SearchService`,
  from its memory cache (direction alone and a whole search over a 740-LoRA corpus) and,
  in a fresh service, from the store's cache.

Shipped and cold alternate ``repeats`` times per query (their median and range are
reported); the three directions must agree to cosine >= 0.99999 in the same run.
The report (text and README Markdown) is :mod:`carlos.bench.query_report`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from carlos.bench.common import machine_info, percentiles, stamp
from carlos.config import DEFAULT_PROMPT_SET, RANDOM_CLIP
from carlos.errors import InvalidInputError

DEFAULT_QUERIES = (
    "pixel art",
    "snowy winter scene",
    "in the style of Katsushika Hokusai",
    "watercolor painting",
    "cyberpunk city at night with neon lights",
)
#: The cold path must beat the shipped procedure by this factor for queries of at most SHORT_QUERY_TOKENS.
COLD_RATIO_TARGET = 10.0
SHORT_QUERY_TOKENS = 3
WARM_TARGET_MS = 20.0
EXACT_COS = 0.99999
#: Fresh services timed per query for the "after a restart" read from the store's cache.
FRESH_REPEATS = 5


@dataclass(frozen=True)
class QueryBenchConfig:
    clip_model: str = RANDOM_CLIP
    queries: tuple[str, ...] = DEFAULT_QUERIES[:3]
    ref_batch: int = 64  # batch size of the 77-padded reference
    repeats: int = 3  # shipped/cold pairs per query
    warm_repeats: int = 20
    corpus_size: int = 740  # LoRAs in the store the warm search ranks
    prompt_set: str = DEFAULT_PROMPT_SET

    def __post_init__(self) -> None:
        if not self.queries:
            raise InvalidInputError("the query benchmark needs at least one query")
        if min(self.ref_batch, self.repeats, self.warm_repeats, self.corpus_size) < 1:
            raise InvalidInputError("ref_batch, repeats, warm_repeats and corpus_size must be positive")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def token_counts(clip: Any, prompts: Sequence[str], query: str) -> dict[str, int]:
    """What each side runs for ``query``: tokens per text of the shipped batches (their longest
    text, padding included) and the new positions the cold path runs in all."""
    from carlos.core.query import compose

    base = [clip.token_ids(p)[0] for p in prompts]
    composed = [clip.token_ids(compose(p, query))[0] for p in prompts]
    new = 0
    for b, c in zip(base, composed, strict=True):
        pool = int(np.argmax(c))  # the end token; the cache reuses the common prefix before it
        same = next((i for i, (x, y) in enumerate(zip(b, c)) if x != y), min(len(b), len(c)))
        new += pool + 1 - min(same, pool)
    return {"shipped_prompts": max(map(len, base)), "shipped_composed": max(map(len, composed)), "cold_positions": new}


def run_query_bench(
    config: QueryBenchConfig | None = None, *, clip: Any = None, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Measure the paths side by side; returns a JSON-ready dict."""
    from carlos.core.query import normalize_query
    from carlos.data.prompts import get_prompt_set
    from carlos.models.clip import load_clip
    from carlos.models.prefix_cache import build_prefix_cache, query_direction_cached
    from carlos.search.query import query_direction_naive, query_direction_shipped
    from carlos.search.retrievers import SearchConfig
    from carlos.search.service import SearchService
    from carlos.store.store import Store

    config = config or QueryBenchConfig()
    info = machine_info()
    queries = [normalize_query(q) for q in config.queries]
    clip, load_s = _timed(lambda: clip or load_clip(config.clip_model, device="cpu"))
    pset = get_prompt_set(config.prompt_set)
    prompts = [p.text for p in pset.query_prompts]
    n = len(prompts)
    shipped = partial(query_direction_shipped, clip, prompts)
    padded = partial(query_direction_naive, clip, prompts, batch_size=config.ref_batch)
    cache, build_s = _timed(lambda: build_prefix_cache(clip, prompts, prompts_hash=pset.content_hash))
    rows, total = [], len(queries)
    with tempfile.TemporaryDirectory(prefix="carlos-bench-query-") as tmp:
        store = Store.open(Path(tmp) / "bench.duckdb")
        _fill_store(store, clip.embedder_id, clip.dim, config.corpus_size)
        loader = lambda name, ckpt: clip  # noqa: E731 -- the service uses this very model
        service = SearchService(store, clip_loader=loader)
        sc = SearchConfig(retriever="carlos", clip_model=config.clip_model, prompt_set=config.prompt_set, top_k=10)
        service.query_direction("benchmark warm-up query", sc)  # the service builds its own prefix cache once
        service.search("benchmark warm-up query", sc)
        for fn in (shipped, padded, partial(query_direction_cached, cache)):  # first-call costs (allocator,
            fn("warm-up")  # kernels for new shapes) stay out of every side
        version_s = [_timed(store.data_version)[1] for _ in range(config.warm_repeats)]
        connect_s = [_timed(partial(_open_close, store))[1] for _ in range(config.warm_repeats)]
        for i, q in enumerate(queries):
            ref77, ref77_s = _timed(partial(padded, q))
            shipped_s, cold_s = [], []
            for _ in range(config.repeats):  # interleaved pairs: both sides see the same machine load
                ref, t_ref = _timed(partial(shipped, q))
                cold, t_cold = _timed(partial(query_direction_cached, cache, q))
                shipped_s.append(t_ref)
                cold_s.append(t_cold)
            svc_cold, svc_cold_s = _timed(partial(service.query_direction, q, sc))
            warm_mem = [_timed(partial(service.query_direction, q, sc))[1] for _ in range(config.warm_repeats)]
            warm_search = [_timed(partial(service.search, q, sc))[1] for _ in range(config.warm_repeats)]
            store_times = []
            for _ in range(FRESH_REPEATS):  # a new service each time: its memory holds nothing yet
                fresh = SearchService(store, clip_loader=loader)
                from_store, fresh_s = _timed(partial(fresh.query_direction, q, sc))
                assert fresh.stats["query_cache_hits"] == 1, "the fresh service should have hit the store cache"
                store_times.append(fresh_s)
            counts = token_counts(clip, prompts, q)
            pair_ratios = [s / c for s, c in zip(shipped_s, cold_s, strict=True)]
            shipped_positions = n * (counts["shipped_prompts"] + counts["shipped_composed"])
            med_ref, med_cold = float(np.median(shipped_s)), float(np.median(cold_s))
            rows.append(
                {
                    "query": q,
                    "query_tokens": cold.query_tokens,
                    "reference_shipped_s": med_ref,
                    "reference_shipped_runs_s": shipped_s,
                    "reference_77_s": ref77_s,
                    "cold_s": med_cold,
                    "cold_runs_s": cold_s,
                    "ratio_vs_shipped": float(np.median(pair_ratios)),
                    "ratio_vs_shipped_range": [float(min(pair_ratios)), float(max(pair_ratios))],
                    "ratio_vs_77": ref77_s / med_cold,
                    "cos_shipped_vs_cold": cosine(ref.direction, cold.direction),
                    "cos_77_vs_cold": cosine(ref77.direction, cold.direction),
                    "cos_shipped_vs_77": cosine(ref.direction, ref77.direction),
                    "cos_shipped_vs_service": cosine(ref.direction, svc_cold.direction),
                    "cos_store_vs_memory": cosine(from_store.direction, svc_cold.direction),
                    "service_cold_s": svc_cold_s,
                    "warm_memory_ms": percentiles(warm_mem)["p50_ms"],
                    "warm_search_ms": percentiles(warm_search)["p50_ms"],
                    "warm_store_ms": float(np.median(store_times)) * 1e3,
                    "n_reencoded": cold.n_reencoded,
                    "n_truncated": cold.n_truncated,
                    # what each side runs through the text tower (token positions, padding included)
                    "shipped_tokens_per_text": [counts["shipped_prompts"], counts["shipped_composed"]],
                    "shipped_positions": shipped_positions,
                    "padded_77_positions": 2 * n * clip.context_length,
                    "cold_positions": counts["cold_positions"],
                    "positions_vs_shipped": shipped_positions / counts["cold_positions"],
                    "positions_vs_77": 2 * n * clip.context_length / counts["cold_positions"],
                    "shipped_us_per_position": med_ref / shipped_positions * 1e6,
                    "cold_us_per_position": med_cold / counts["cold_positions"] * 1e6,
                }
            )
            if progress:
                progress(i + 1, total)
    return {
        "benchmark": "query",
        "when": stamp(),
        "machine": info,
        "config": asdict(config),
        "clip": clip.embedder_id,
        "clip_load_s": load_s,
        "n_prompts": n,
        "sides": _sides(n, clip.context_length, config),
        "prefix_cache": {"build_s": build_s, "mib": cache.nbytes / 2**20},
        "targets": {
            "cold_ratio_vs_shipped": COLD_RATIO_TARGET,
            "short_query_tokens": SHORT_QUERY_TOKENS,
            "warm_ms": WARM_TARGET_MS,
            "cos": EXACT_COS,
        },
        "queries": rows,
        "summary": _summary(rows, version_s, connect_s),
    }


def _sides(n: int, ctx: int, config: QueryBenchConfig) -> dict[str, str]:
    return {
        "reference_shipped": f"{n} query prompts and {n} prompt + ' ' + query texts, encoded as two batches of {n}, "
        "each padded to its longest text (the authors' padding=True; tokens per text: p + c in the table)",
        "reference_77": f"the same {2 * n} texts, each padded to {ctx} tokens, in batches of {config.ref_batch}",
        "cold": f"prefix KV cache: {n} x (query tokens + 1) new positions in one batch against the cached prompt "
        "keys/values; the last block runs the pooled (end-token) position only",
    }


def _summary(rows: list[dict[str, Any]], version_s: list[float], connect_s: list[float]) -> dict[str, Any]:
    vs_shipped = [r["ratio_vs_shipped"] for r in rows]
    vs_77 = [r["ratio_vs_77"] for r in rows]
    short = [r["ratio_vs_shipped"] for r in rows if r["query_tokens"] <= SHORT_QUERY_TOKENS]
    min_cos = min(min(r["cos_shipped_vs_cold"], r["cos_77_vs_cold"], r["cos_shipped_vs_service"]) for r in rows)
    warm_direction = max(r["warm_memory_ms"] for r in rows)
    median_search = float(np.median([r["warm_search_ms"] for r in rows]))
    return {
        "median_reference_shipped_s": float(np.median([r["reference_shipped_s"] for r in rows])),
        "median_reference_77_s": float(np.median([r["reference_77_s"] for r in rows])),
        "median_cold_s": float(np.median([r["cold_s"] for r in rows])),
        "median_ratio_vs_shipped": float(np.median(vs_shipped)),
        "min_ratio_vs_shipped": float(min(vs_shipped)),
        "min_ratio_vs_shipped_short": float(min(short)) if short else None,
        "median_ratio_vs_77": float(np.median(vs_77)),
        "min_ratio_vs_77": float(min(vs_77)),
        "median_warm_search_ms": median_search,
        "median_warm_store_ms": float(np.median([r["warm_store_ms"] for r in rows])),
        "median_warm_memory_ms": float(np.median([r["warm_memory_ms"] for r in rows])),
        "store_data_version_ms": percentiles(version_s)["p50_ms"],
        "store_connect_ms": percentiles(connect_s)["p50_ms"],
        "min_cos": min_cos,
        "min_cos_shipped_vs_77": min(r["cos_shipped_vs_77"] for r in rows),
        "cold_target_met": (min(short) >= COLD_RATIO_TARGET) if short else None,
        "warm_target_met": warm_direction < WARM_TARGET_MS,
        "warm_search_target_met": median_search < WARM_TARGET_MS,
        "exact": min_cos >= EXACT_COS,
    }


def _open_close(store: Any) -> None:
    """One locked DuckDB connection, opened and closed: the floor of any read from the store."""
    with store.session():
        pass


def _fill_store(store: Any, embedder: str, dim: int, n: int) -> None:
    """``n`` LoRAs with random directions in ``embedder`` space (only the ranking cost matters)."""
    rng = np.random.default_rng(0)
    store.reps.bulk_insert(
        [f"bench:{i}" for i in range(n)],
        rng.standard_normal((n, dim)).astype(np.float32),
        rng.uniform(1.0, 10.5, n),
        rng.uniform(0.0, 0.5, n),
        embedder=embedder,
        source="benchmark",
    )
