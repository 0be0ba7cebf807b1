"""Benchmark: synthetic corpora of 10k to 1M LoRAs shaped like the released one.

For each size, in a fresh DuckDB store, it measures: import time and store size;
load time and peak memory of the bare serving state (``store.reps.load_directions`` into
one preallocated float32 matrix + :class:`carlos.core.index.DirectionIndex`); the
latency of top-k with the paper's filters (p50/p95 over ``queries`` directions)
and that every answer equals the float32 brute force; the library path the
dashboard and CLI run (``load_view`` + ``ranking.by_direction``: the same index
behind a pandas frame of the LoRAs and typed hits) up to ``library_max``; and UMAP
(fit on a sample with :func:`carlos.viz.maps.fit_umap`, the rest placed with ``transform``).

Each stage runs in its own spawned process so its peak memory is its own. The tables
and notes are :mod:`carlos.bench.scale_report`.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from carlos.bench.common import MemoryProbe, machine_info, percentiles, stamp
from carlos.bench.synthetic import CorpusModel, corpus_statistics
from carlos.config import CORPUS_EMBEDDER, Thresholds
from carlos.core.index import BLOCK_ROWS, DirectionIndex, same_top_k
from carlos.errors import InvalidInputError
from carlos.models.int8 import FbgemmInt8
from carlos.store.engine import release as release_store_memory
from carlos.store.postgres import redact

log = logging.getLogger(__name__)

SYNTHETIC_EMBEDDER = "synthetic/" + CORPUS_EMBEDDER
P50_TARGET_MS = 100.0
MEMORY_TARGET = 1.5
#: A team store (PostgreSQL) against the embedded one at the same size: search after the first load
#: and a page's store reads, each at most this many times DuckDB's p50.
TEAM_TARGETS = {"team_search_ratio": 1.5, "team_page_read_ratio": 2.0}


@dataclass(frozen=True)
class ScaleBenchConfig:
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    queries: int = 50
    top_k: int = 10
    exact_checks: int = 10  # queries also answered by brute force to check the index
    umap_min: int = 100_000  # UMAP from this size on ...
    umap_max: int = 1_000_000  # ... up to this one
    umap_sample: int = 20_000  # points UMAP is fitted on; the rest are transformed
    library_max: int = 1_000_000  # also time load_view + ranking.by_direction up to this size
    page_reads: int = 30  # detail-page reads timed per size (up to library_max)
    rank: int = 64  # principal axes of the synthetic model
    seed: int = 0
    isolate: bool = True  # one spawned process per stage (clean peak memory)
    workdir: str | None = None
    keep: bool = False

    def __post_init__(self) -> None:
        if not self.sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 100 for n in self.sizes):
            raise InvalidInputError(f"sizes must be integers >= 100, got {self.sizes!r}")
        if self.queries < 1 or self.top_k < 1 or self.umap_sample < 100:
            raise InvalidInputError("queries and top_k must be positive and umap_sample >= 100")


def real_corpus(store: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """The released directions, from ``store`` when it holds them, else the verified parquet."""
    if store is not None and store.reps.embedders().get(CORPUS_EMBEDDER, 0) >= 100:
        _, m, s, c = store.reps.load_directions(CORPUS_EMBEDDER)
        return m, s, c, f"store {store.path}"
    import pyarrow.parquet as pq

    from carlos.config import default_paths
    from carlos.data.corpus import fetch_release

    path = fetch_release(default_paths().cache_dir)
    t = pq.read_table(path, columns=["direction", "strength", "consistency"])
    m = t.column("direction").combine_chunks().flatten().to_numpy().astype(np.float32).reshape(t.num_rows, -1)
    return m, t.column("strength").to_numpy(), t.column("consistency").to_numpy(), f"parquet {path.name}"


# ------------------------------------------------------------------------------ stages (child processes)
def _stage_import(model: CorpusModel, db: str, n: int, seed: int) -> dict[str, Any]:
    from carlos.store.store import Store

    store = Store.open(db)
    t0 = time.perf_counter()
    first = None
    for b, (m, s, c) in enumerate(model.sample(n, seed=seed)):
        start = b * BLOCK_ROWS
        ids = [f"syn:{i:07d}" for i in range(start, start + len(m))]
        store.reps.bulk_insert(ids, m, s, c, embedder=SYNTHETIC_EMBEDDER, source="synthetic", protocol="synthetic")
        if first is None:
            first = corpus_statistics(m, s, c)
    import_s = time.perf_counter() - t0
    return {"import_s": import_s, "store_bytes": store.size_bytes(), "stats_first_block": first}


def _stage_serve(db: str, n_queries: int, top_k: int, exact_checks: int, model: CorpusModel, seed: int) -> dict:
    import torch  # imported before the baseline so its own memory is not counted

    from carlos.store.store import Store

    store = Store.open(db)
    release_store_memory()  # an earlier stage's DuckDB memory is not this stage's (--no-isolate)
    probe = MemoryProbe()
    base = probe.start()
    t0 = time.perf_counter()
    ids, matrix, strength, consistency = store.reps.load_directions(SYNTHETIC_EMBEDDER)
    load_s = time.perf_counter() - t0
    after_load = MemoryProbe.rss() - base
    t1 = time.perf_counter()
    index = DirectionIndex(matrix, strength, consistency, int8=FbgemmInt8())
    build_s = time.perf_counter() - t1
    queries = next(model.sample(n_queries + 2, seed=seed + 1, block=n_queries + 2))[0]
    thresholds = Thresholds()
    for q in queries[:2]:  # warm-up
        index.search(q, top_k, thresholds)
    # torch's default threads (all cores) and one thread, interleaved per query: on a busy
    # machine the threads of one GEMV wait for each other, one thread only shares a core
    default_threads = torch.get_num_threads()
    times, times_default, cands, answers = [], [], [], []
    for q in queries[2:]:
        torch.set_num_threads(default_threads)
        t = time.perf_counter()
        index.search(q, top_k, thresholds)
        times_default.append(time.perf_counter() - t)
        torch.set_num_threads(1)
        t = time.perf_counter()
        rows, scores, st = index.search(q, top_k, thresholds)
        times.append(time.perf_counter() - t)
        cands.append(st.candidates)
        answers.append((rows, scores))
    torch.set_num_threads(default_threads)
    scan_times, agree = [], 0
    for q, (rows, scores) in zip(queries[2 : 2 + exact_checks], answers):
        t = time.perf_counter()
        r2, s2 = index.exact_search(q, top_k, thresholds)
        scan_times.append(time.perf_counter() - t)
        agree += same_top_k(rows, scores, r2, s2)
    peak = probe.peak() - base
    raw = matrix.nbytes
    return {
        "n": len(ids),
        "load_s": load_s,
        "index_build_s": build_s,
        "kernel": index.kernel,
        "topk": percentiles(times),
        "topk_default_threads": percentiles(times_default),
        "default_threads": default_threads,
        "candidates_p50": float(np.median(cands)),
        "eligible": int(index.filter_mask(thresholds).sum()),
        "float32_scan": percentiles(scan_times),
        "exact_agree": agree,
        "exact_checked": min(exact_checks, len(answers)),
        "raw_bytes": raw,
        "index_extra_bytes": index.nbytes,
        "rss_after_load_bytes": after_load,
        "steady_bytes": MemoryProbe.rss() - base,
        "peak_bytes": peak,
        "peak_over_raw": peak / raw,
        "memory_method": probe.method,
    }


def _stage_library(db: str, n_queries: int, top_k: int, model: CorpusModel, seed: int) -> dict[str, Any]:
    """What the dashboard and the CLI run: ``load_view`` (frame + matrix), its index, ``by_direction``."""
    import torch  # imported before the baseline so its own memory is not counted

    from carlos.core.ranking import by_direction
    from carlos.search.views import corpus_view as load_view
    from carlos.store.store import Store

    store = Store.open(db)
    release_store_memory()  # an earlier stage's DuckDB memory is not this stage's (--no-isolate)
    probe = MemoryProbe()
    base = probe.start()
    t0 = time.perf_counter()
    view = load_view(store, SYNTHETIC_EMBEDDER)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    kernel = view.index.kernel
    index_s = time.perf_counter() - t1
    queries = next(model.sample(n_queries + 1, seed=seed + 1, block=n_queries + 1))[0]
    by_direction(view, queries[0], thresholds=Thresholds(), top_k=top_k)  # warm-up: percentiles, flags
    torch.set_num_threads(1)  # as in the serve stage: one GEMV thread shares a busy core best
    times = []
    for q in queries[1:]:
        t = time.perf_counter()
        by_direction(view, q, thresholds=Thresholds(), top_k=top_k)
        times.append(time.perf_counter() - t)
    peak = probe.peak() - base
    return {
        "load_view_s": load_s,
        "index_build_s": index_s,
        "kernel": kernel,
        "by_direction": percentiles(times),
        "peak_bytes": peak,
        "peak_over_raw": peak / view.matrix.nbytes,
    }


def _stage_pages(db: str, reads: int, seed: int) -> dict[str, Any]:
    """What a page render costs the store once the corpus view is in memory: the detail page's
    reads (the LoRA, its representations, jobs, review, weight links, map region) of ``reads``
    LoRAs, each read for the first time, as a page whose cached read missed does them."""
    from carlos.pagemodels.detail import read_detail_uncached
    from carlos.search.views import corpus_view
    from carlos.store.store import Store

    store = Store.open(db)
    t0 = time.perf_counter()
    view = corpus_view(store, SYNTHETIC_EMBEDDER)  # this process's first load of the view
    first_view_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    ids = view.ids
    keys = [ids[i] for i in rng.choice(len(ids), size=reads + 1, replace=False)]
    read_detail_uncached(store, keys[0], SYNTHETIC_EMBEDDER)  # warm-up
    times = []
    for key in keys[1:]:
        t = time.perf_counter()
        data = read_detail_uncached(store, key, SYNTHETIC_EMBEDDER)
        times.append(time.perf_counter() - t)
        assert data.lora_id == key, (data.lora_id, key)
    return {"first_view_s": first_view_s, "reads": reads, "detail_read": percentiles(times)}


def _stage_umap(db: str, sample: int, seed: int) -> dict[str, Any]:
    from carlos.store.store import Store
    from carlos.viz.maps import MapConfig, fit_umap

    _, matrix, _, _ = Store.open(db).reps.load_directions(SYNTHETIC_EMBEDDER)
    rng = np.random.default_rng(seed)
    n = len(matrix)
    fit_rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    rest = np.setdiff1d(np.arange(n), fit_rows)
    t0 = time.perf_counter()
    model, _ = fit_umap(matrix[fit_rows], MapConfig())
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for a in range(0, len(rest), 50_000):
        model.transform(matrix[rest[a : a + 50_000]])
    transform_s = time.perf_counter() - t1
    return {
        "fit_points": len(fit_rows),
        "fit_s": fit_s,
        "transform_points": int(len(rest)),
        "transform_s": transform_s,
        "total_s": fit_s + transform_s,
    }


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """DuckDB draws progress bars on file descriptor 1; keep them out of ``--json`` output."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _quiet(fn: Callable[..., dict], *args: Any) -> dict[str, Any]:
    with _stdout_to_stderr():
        return fn(*args)


def _call(isolate: bool, fn: Callable[..., dict], *args: Any) -> dict[str, Any]:
    if not isolate:
        return _quiet(fn, *args)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_quiet, (fn, *args))


# ------------------------------------------------------------------------------ driver
def _team_store_row(config: ScaleBenchConfig, model: CorpusModel, server: str, n: int) -> dict[str, Any]:
    """The same stages on a new database of the PostgreSQL ``server``, dropped afterwards."""
    from carlos.store.postgres import create_database, drop_database

    name = f"carlos_bench_scale_{n}_{os.urandom(4).hex()}"
    url = create_database(server, name)
    try:
        out: dict[str, Any] = {"import": _call(config.isolate, _stage_import, model, url, n, config.seed)}
        out["serve"] = _call(config.isolate, _stage_serve, url, config.queries, config.top_k, config.exact_checks, model, config.seed)
        if n <= config.library_max:
            out["library"] = _call(config.isolate, _stage_library, url, min(config.queries, 20), config.top_k, model, config.seed)
            out["pages"] = _call(config.isolate, _stage_pages, url, config.page_reads, config.seed)
        return out
    finally:
        drop_database(server, name)


def run_scale_bench(
    config: ScaleBenchConfig | None = None,
    *,
    store: Any = None,
    team_store: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Every stage for every size; returns a JSON-ready dict. With ``team_store`` (a PostgreSQL URL)
    the import, load, search and page-read stages also run on a new database of that server, side by
    side with the DuckDB file (the URL is never reported)."""
    config = config or ScaleBenchConfig()
    info = machine_info()
    m, s, c, source = real_corpus(store)
    model = CorpusModel.fit(m, s, c, rank=config.rank)
    real_stats = corpus_statistics(m, s, c)
    root = Path(config.workdir) if config.workdir else Path(tempfile.mkdtemp(prefix="carlos-bench-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for i, n in enumerate(config.sizes):
            db = str(root / f"synthetic-{n}.duckdb")
            for p in root.glob(f"synthetic-{n}.duckdb*"):
                p.unlink()
            row: dict[str, Any] = {"n": n}
            row["import"] = _call(config.isolate, _stage_import, model, db, n, config.seed)
            row["serve"] = _call(config.isolate, _stage_serve, db, config.queries, config.top_k, config.exact_checks, model, config.seed)
            row["library"] = (
                _call(config.isolate, _stage_library, db, min(config.queries, 20), config.top_k, model, config.seed)
                if n <= config.library_max
                else None
            )
            row["pages"] = _call(config.isolate, _stage_pages, db, config.page_reads, config.seed) if n <= config.library_max else None
            row["umap"] = (
                _call(config.isolate, _stage_umap, db, config.umap_sample, config.seed) if config.umap_min <= n <= config.umap_max else None
            )
            if not config.keep:
                for p in root.glob(f"synthetic-{n}.duckdb*"):
                    p.unlink()
            row["team_store"] = _team_store_row(config, model, team_store, n) if team_store else None
            rows.append(row)
            if progress:
                progress(i + 1, len(config.sizes))
    finally:
        if not config.keep and not config.workdir:
            shutil.rmtree(root, ignore_errors=True)
    return {
        "benchmark": "scale",
        "when": stamp(),
        "machine": info,
        "config": asdict(config),
        "model": {"source": source, "rank": int(model.components.shape[0]), "real": real_stats},
        "targets": {"p50_ms_at_1M": P50_TARGET_MS, "peak_over_raw": MEMORY_TARGET, **TEAM_TARGETS},
        "team_store": redact(team_store) if team_store else None,
        "sizes": rows,
    }
