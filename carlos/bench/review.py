"""Benchmark: the review page's data (queue + near-duplicate groups) at 10k to 100k LoRAs.

For each size it builds a synthetic store shaped like the released corpus
(:class:`carlos.bench.synthetic.CorpusModel`) with planted near-duplicates (a share of the
LoRAs are perturbed copies of others, cosine 0.96–0.999) and ``open_items`` flagged or
escalated items (half of them from planted pairs, so groups form), then times what the page
computes on each render: :func:`carlos.review.workflow.status_frame` and
:func:`carlos.review.workflow.review_queue` (the queue, re-uploads, near-duplicates at
``level`` and the groups of :mod:`carlos.review.duplicates`):

* **first render** — nothing kept from before (``duplicates.forget()``): the target row;
* **re-render** — the same queue again (answers kept per view and level);
* **the old code** — the float32 normalized matrix times the queue in one product, as
  ``review_queue`` did before, and its peak memory; with every status shown it needs
  n × n floats, which is given, not run;
* **one index search per item** — :meth:`carlos.core.index.DirectionIndex.search` (top-k with
  the int8 first pass) for a sample of items, scaled to the queue: why the page shares one
  pass over the corpus between the items instead.

It checks that the near-duplicates equal the old code's (float32 ties within 1e-5 of the
level aside). Peak memory is what numpy allocated (``tracemalloc``) during a separate run.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from carlos.bench.common import machine_info, markdown_table, stamp, text_table
from carlos.bench.synthetic import CorpusModel
from carlos.config import CORPUS_EMBEDDER, Thresholds
from carlos.core.index import DirectionIndex
from carlos.core.representation import ZERO_NORM
from carlos.core.view import CorpusView
from carlos.errors import InvalidInputError

SYNTHETIC_EMBEDDER = "synthetic/" + CORPUS_EMBEDDER
TARGET_SIZE = 100_000
TARGET_S = 2.0

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ReviewBenchConfig:
    sizes: tuple[int, ...] = (10_000, 100_000)
    open_items: int = 1_000  # flagged or escalated items: the queue the page shows by default
    level: float = 0.95  # the page's default near-duplicate level
    planted: float = 0.02  # share of LoRAs planted as near-copies of another
    repeats: int = 3  # timed renders per measurement (median and range)
    search_sample: int = 20  # items timed with one index search each
    reference_max: int = 100_000  # run the old code up to this size
    seed: int = 0
    workdir: str | None = None
    keep: bool = False

    def __post_init__(self) -> None:
        if not self.sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 100 for n in self.sizes):
            raise InvalidInputError(f"sizes must be integers >= 100, got {self.sizes!r}")
        if not 1 <= self.open_items <= min(self.sizes):
            raise InvalidInputError(f"open_items must be between 1 and the smallest size, got {self.open_items}")
        if not 0.5 <= self.level <= 1.0 or not 0.0 <= self.planted <= 0.5 or self.repeats < 1 or self.search_sample < 1:
            raise InvalidInputError("level must be within [0.5, 1], planted within [0, 0.5], repeats and search_sample >= 1")


def synthetic_review_store(path: Path, model: CorpusModel, n: int, cfg: ReviewBenchConfig) -> tuple[Any, dict[str, Any]]:
    """A store of ``n`` synthetic LoRAs with planted near-duplicates and an open queue."""
    from carlos.store.store import Store

    rng = np.random.default_rng(cfg.seed + n)
    m, s, c = (np.concatenate(x) for x in zip(*model.sample(n, seed=cfg.seed)))
    n_copies = int(cfg.planted * n)
    copies = rng.choice(n, size=2 * n_copies, replace=False)
    src, dst = copies[:n_copies], copies[n_copies:]
    for a, b in zip(src, dst):  # b := a turned by an angle of cosine 0.96-0.999, its own length
        u = m[a] / max(float(np.linalg.norm(m[a])), ZERO_NORM)
        g = rng.standard_normal(m.shape[1])
        g -= (g @ u) * u
        cos = rng.uniform(0.96, 0.999)
        v = cos * u + np.sqrt(1.0 - cos**2) * g / np.linalg.norm(g)
        m[b] = (v * np.linalg.norm(m[b])).astype(np.float32)
    store = Store.open(path)
    ids = [f"syn:{i:07d}" for i in range(n)]
    t0 = time.perf_counter()
    store.reps.bulk_insert(ids, m, s, c, embedder=SYNTHETIC_EMBEDDER, source="synthetic", protocol="synthetic")
    half = min(cfg.open_items // 2, n_copies)
    rest = np.setdiff1d(np.arange(n), dst[:half])
    queue = np.concatenate([dst[:half], rng.choice(rest, size=cfg.open_items - half, replace=False)])
    with store.transaction():  # the benchmark owns this store: its decisions go in directly
        for k, row in enumerate(queue):
            action, status = ("escalate", "escalated") if k % 10 == 0 else ("flag", "flagged")
            store.review.append_decision(ids[row], "bench@example.org", action, "unreviewed", status, None)
    return store, {"store_s": time.perf_counter() - t0, "planted_pairs": n_copies}


def old_near_duplicates(view: CorpusView, rows: np.ndarray, level: float) -> list[list[str]]:
    """What ``review_queue`` computed before: the normalized matrix times the queue, at once."""
    m = view.matrix / np.maximum(np.linalg.norm(view.matrix, axis=1, keepdims=True), 1e-12)
    sims = m[rows] @ m.T
    ids = np.array(view.ids)
    return [[ids[h] for h in np.flatnonzero(sims[k] >= level) if h != r] for k, r in enumerate(rows)]


def _timed(fn: Callable[[], Any], repeats: int, before: Callable[[], None] | None = None) -> tuple[dict[str, float], Any]:
    times, out = [], None
    for _ in range(repeats):
        if before:
            before()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    a = np.asarray(times)
    return {"median_s": float(np.median(a)), "min_s": float(a.min()), "max_s": float(a.max())}, out


def _peak_bytes(fn: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        fn()
        return int(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def _agree(view: CorpusView, rows: np.ndarray, new: list[list[str]], old: list[list[str]], level: float) -> bool:
    """Same lists, except pairs whose float32 cosine is within 1e-5 of the level."""
    m = view.matrix / np.maximum(np.linalg.norm(view.matrix, axis=1, keepdims=True), 1e-12)
    pos = {lid: i for i, lid in enumerate(view.ids)}
    for r, a, b in zip(rows, new, old):
        for lid in set(a) ^ set(b):
            if abs(float(m[r] @ m[pos[lid]]) - level) > 1e-5:
                return False
    return True


def _one_size(model: CorpusModel, n: int, cfg: ReviewBenchConfig, root: Path) -> dict[str, Any]:
    from carlos.models.int8 import FbgemmInt8
    from carlos.review import duplicates
    from carlos.review import workflow as review
    from carlos.store.catalog import load_view

    store, built = synthetic_review_store(root / f"review-{n}.duckdb", model, n, cfg)
    t0 = time.perf_counter()
    view = load_view(store, SYNTHETIC_EMBEDDER)
    load_s = time.perf_counter() - t0

    def page_data() -> Any:
        review.status_frame(store, view)  # the page's "all items" (reviewer choices, hidden count)
        return review.review_queue(store, view, near_duplicate_cos=cfg.level)

    first, queue = _timed(page_data, cfg.repeats, before=duplicates.forget)
    again, _ = _timed(page_data, cfg.repeats)
    rows = np.array([view.row_of(i) for i in queue["lora_id"]])
    new_lists = list(queue["near_duplicates"])
    out: dict[str, Any] = {
        "n": n,
        "open_items": int(len(queue)),
        "looked_up": int(len(queue) - queue.attrs["near_duplicates_skipped"]),
        "items_with_near_duplicates": int(sum(bool(x) for x in new_lists if x is not None)),
        "groups": int(queue["group"].nunique()),
        "largest_group": int(queue["group_size"].max()),
        **built,
        "load_view_s": load_s,
        "first_render": first,
        "re_render": again,
        "first_render_peak_bytes": _peak_bytes(lambda: (duplicates.forget(), page_data())),
        "old_show_all_bytes": 4 * n * n + 4 * n * view.matrix.shape[1],
    }
    if n <= cfg.reference_max:
        old, old_lists = _timed(lambda: old_near_duplicates(view, rows, cfg.level), cfg.repeats)
        out["old_code"] = old
        out["old_code_peak_bytes"] = _peak_bytes(lambda: old_near_duplicates(view, rows, cfg.level))
        out["agrees_with_old_code"] = _agree(view, rows, [x or [] for x in new_lists], old_lists, cfg.level)
    t1 = time.perf_counter()
    index = DirectionIndex(np.ascontiguousarray(view.matrix), *view.values, int8=FbgemmInt8())
    out["index_build_s"] = time.perf_counter() - t1
    out["index_kernel"] = index.kernel
    sample = rows[: cfg.search_sample]
    everyone = Thresholds(None, None)
    t2 = time.perf_counter()
    for r in sample:
        index.search(view.matrix[r], 16, everyone)
    per_item = (time.perf_counter() - t2) / len(sample)
    out["index_search_per_item_ms"] = per_item * 1e3
    out["index_search_queue_s"] = per_item * len(queue)
    return out


def run_review_bench(config: ReviewBenchConfig, *, store: Any = None, progress: Progress | None = None) -> dict[str, Any]:
    """Measure every size of ``config`` (see the module docstring); a JSON-ready dict."""
    from carlos.bench.scale import real_corpus

    m, s, c, source = real_corpus(store)
    model = CorpusModel.fit(m, s, c)
    root = Path(config.workdir) if config.workdir else Path(tempfile.mkdtemp(prefix="carlos-bench-review-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for k, n in enumerate(config.sizes):
            if progress:
                progress(k, len(config.sizes))
            rows.append(_one_size(model, n, config, root))
        if progress:
            progress(len(config.sizes), len(config.sizes))
    finally:
        if not config.keep and not config.workdir:
            shutil.rmtree(root, ignore_errors=True)
    target = next((r for r in rows if r["n"] == TARGET_SIZE), None)
    return {
        "benchmark": "review",
        "when": stamp(),
        "machine": machine_info(),
        "config": asdict(config),
        "model_source": source,
        "sizes": rows,
        "target": {
            "n": TARGET_SIZE,
            "seconds": TARGET_S,
            "first_render_s": None if target is None else target["first_render"]["median_s"],
            "met": None if target is None else target["first_render"]["median_s"] < TARGET_S,
        },
    }


def _mb(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f} MB" if b < 2**30 * 10 else f"{b / 2**30:,.0f} GB"


def _rows(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = [
        "LoRAs",
        "open items",
        "groups (largest)",
        "first render s",
        "re-render s",
        "peak",
        "old code s",
        "old peak",
        "old, all statuses",
        "index search per item → queue s",
        "same as old",
    ]
    out = []
    for r in result["sizes"]:
        old = r.get("old_code")
        out.append(
            [
                f"{r['n']:,}",
                f"{r['open_items']:,} ({r['items_with_near_duplicates']} with near-dups)",
                f"{r['groups']:,} ({r['largest_group']})",
                f"{r['first_render']['median_s']:.2f} ({r['first_render']['min_s']:.2f}–{r['first_render']['max_s']:.2f})",
                f"{r['re_render']['median_s']:.3f}",
                _mb(r["first_render_peak_bytes"]),
                "-" if old is None else f"{old['median_s']:.2f}",
                _mb(r.get("old_code_peak_bytes")),
                _mb(r["old_show_all_bytes"]) + " (not run)",
                f"{r['index_search_per_item_ms']:.1f} ms → {r['index_search_queue_s']:.1f}",
                {True: "yes", False: "NO", None: "-"}[r.get("agrees_with_old_code")],
            ]
        )
    return headers, out


def _verdict(result: dict[str, Any]) -> str:
    t = result["target"]
    if t["met"] is None:
        return f"target: the first render under {t['seconds']:g} s at {t['n']:,} LoRAs (not measured in this run)"
    word = "met" if t["met"] else "NOT met"
    return f"target {word}: first render {t['first_render_s']:.2f} s at {t['n']:,} LoRAs (target under {t['seconds']:g} s)"


def review_bench_text(result: dict[str, Any]) -> str:
    from carlos.bench.common import machine_line

    headers, rows = _rows(result)
    cfg = result["config"]
    return "\n".join(
        [
            f"review page data (status frame + queue + near-duplicates at cos ≥ {cfg['level']:g} + groups), {stamp()}",
            machine_line(result["machine"]),
            text_table(headers, rows),
            _verdict(result),
        ]
    )


def review_bench_markdown(result: dict[str, Any], command: str) -> str:
    from carlos.bench.common import machine_line

    headers, rows = _rows(result)
    cfg = result["config"]
    return "\n".join(
        [
            "## Review page data at scale",
            "",
            f"`{command}` — {result['when']}; {machine_line(result['machine'])}.",
            "",
            f"Synthetic corpora shaped like the released one, {cfg['planted']:.0%} of the LoRAs planted as near-copies of "
            f"another (cosine 0.96–0.999), {cfg['open_items']:,} open (flagged or escalated) items, half of them planted "
            f"copies. Times are the median (range) of {cfg['repeats']} runs of what the page computes per render: the "
            f"status frame, the queue with re-uploads and near-duplicates at cos ≥ {cfg['level']:g}, and the groups "
            "(`carlos/review/duplicates.py`). *First render*: nothing kept from before; *re-render*: the answers kept "
            "per view and level. *Old code*: the normalized matrix times the queue in one product (what `review_queue` "
            "did); with every status shown it needs the n × n matrix given (not run). *Index search per item*: one "
            "top-k search of the direction index (int8 first pass) per item, scaled to the queue. Peak: numpy's "
            "allocations during one first render (`tracemalloc`).",
            "",
            markdown_table(headers, rows),
            "",
            _verdict(result) + ".",
        ]
    )
