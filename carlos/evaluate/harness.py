"""Evaluation of retrievers: the query set, the harness that runs every retriever, and the reports.

The harness runs each retriever over the evaluation queries and measures the diversity of
its rankings at every span (the metrics are :mod:`carlos.evaluate.diversity`). BM25 hits of
score 0 (no query term in the text) are not results: their order is arbitrary, so they do
not fill slots.

Relevance (the judge and the paper's top-3 protocol) is :mod:`carlos.evaluate.relevance`;
:func:`evaluate` runs it over the finished rankings and reports it alongside.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from carlos.config import CORPUS_EMBEDDER, REPO_ROOT, Thresholds
from carlos.errors import CarlosError, InvalidInputError
from carlos.evaluate.diversity import Diversity, diversity
from carlos.evaluate.relevance import RelevanceJudge, RelevanceReport, judged_relevance

SPANS = (1, 3, 5, 10, 20)
QUERIES_PATH = REPO_ROOT / "data" / "eval_queries.json"
METRICS = ("normalized_entropy", "effective_lora_count", "distinct_loras")
METRIC_LABELS = {
    "normalized_entropy": "Normalized Entropy",
    "effective_lora_count": "Effective LoRA Count",
    "distinct_loras": "Distinct LoRAs",
}
Progress = Callable[[int, int], None]


# ---------------------------------------------------------------------------- queries
@dataclass(frozen=True)
class EvalQuery:
    text: str
    category: str


@dataclass(frozen=True)
class QuerySet:
    id: str
    queries: tuple[EvalQuery, ...]
    content_hash: str

    @property
    def texts(self) -> list[str]:
        return [q.text for q in self.queries]

    def categories(self) -> dict[str, int]:
        return dict(Counter(q.category for q in self.queries))


def load_queries(path: str | Path | None = None, *, categories: Sequence[str] | None = None, limit: int | None = None) -> QuerySet:
    """The evaluation queries (default ``data/eval_queries.json``), validated.

    ``limit`` keeps the first ``limit`` queries of every category (a quick, balanced subset).
    """
    from carlos.core.query import normalize_query

    path = Path(path) if path is not None else QUERIES_PATH
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"cannot read the query set {path}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("categories"), dict) or not data.get("id"):
        raise InvalidInputError(f"{path}: expected {{'id': ..., 'categories': {{name: [query, ...]}}}}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidInputError(f"limit must be a positive int, got {limit!r}")
    known = list(data["categories"])
    if categories is not None:
        unknown = set(categories) - set(known)
        if unknown:
            raise InvalidInputError(f"unknown query categories {sorted(unknown)}; the set has {known}")
    seen: set[str] = set()
    out = []
    for cat, items in data["categories"].items():
        if not isinstance(items, list) or not items:
            raise InvalidInputError(f"{path}: category {cat!r} must be a non-empty list of strings")
        if categories is not None and cat not in categories:
            continue
        for text in items[:limit] if limit else items:
            if not isinstance(text, str):
                raise InvalidInputError(f"{path}: category {cat!r} holds a non-string {text!r}")
            q = normalize_query(text)
            if q.lower() in seen:
                raise InvalidInputError(f"{path}: duplicate query {q!r}")
            seen.add(q.lower())
            out.append(EvalQuery(q, cat))
    digest = hashlib.sha256(json.dumps([[q.text, q.category] for q in out]).encode()).hexdigest()
    return QuerySet(id=str(data["id"]), queries=tuple(out), content_hash=digest)


# ---------------------------------------------------------------------------- harness
@dataclass(frozen=True)
class EvalConfig:
    retrievers: tuple[str, ...] = ("bm25", "behaviour", "text-embedding")
    spans: tuple[int, ...] = SPANS
    thresholds: Thresholds = field(default_factory=Thresholds)
    include_carlos: bool = True  # run (or report unavailable) the CARLoS retriever too
    clip_model: str = CORPUS_EMBEDDER
    clip_checkpoint: str | None = None
    text_model: str | None = None
    judge_top: int = 3

    def __post_init__(self) -> None:
        from carlos.search.retrievers import RETRIEVERS

        bad = [r for r in self.retrievers if r not in RETRIEVERS]
        if bad or not self.retrievers:
            raise InvalidInputError(f"unknown retrievers {bad}; choose from {', '.join(RETRIEVERS)}")
        if not self.spans or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000 for k in self.spans):
            raise InvalidInputError(f"spans must be integers between 1 and 1000, got {self.spans!r}")

    @property
    def run_order(self) -> tuple[str, ...]:
        extra = ("carlos",) if self.include_carlos and "carlos" not in self.retrievers else ()
        return tuple(dict.fromkeys((*self.retrievers, *extra)))


@dataclass(frozen=True)
class RetrieverRun:
    name: str
    label: str
    available: bool
    reason: str
    pool_size: int = 0
    seconds: float = 0.0
    rankings: dict[str, list[str]] = field(default_factory=dict)  # query -> ranked lora ids
    metrics: list[Diversity] = field(default_factory=list)
    by_category: dict[str, list[Diversity]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EvaluationReport:
    query_set: dict[str, Any]
    spans: tuple[int, ...]
    thresholds: Thresholds
    runs: list[RetrieverRun]
    relevance: RelevanceReport
    seconds: float

    def to_dict(self, *, rankings: bool = False) -> dict[str, Any]:
        runs = {}
        for r in self.runs:
            d = {k: v for k, v in asdict(r).items() if k not in ("rankings", "metrics", "by_category")}
            d["metrics"] = {str(m.span): _clean(asdict(m)) for m in r.metrics}
            d["by_category"] = {c: {str(m.span): _clean(asdict(m)) for m in ms} for c, ms in r.by_category.items()}
            if rankings:
                d["rankings"] = r.rankings
            runs[r.name] = d
        return {
            "query_set": self.query_set,
            "spans": list(self.spans),
            "thresholds": asdict(self.thresholds),
            "retrievers": runs,
            "relevance": asdict(self.relevance),
            "seconds": self.seconds,
        }


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _run_retriever(
    service: Any, name: str, queries: QuerySet, config: EvalConfig, k_max: int, progress: Progress | None, done: int, total: int
) -> RetrieverRun:
    from carlos.search.retrievers import LABELS, SearchConfig

    status = {
        s.name: s
        for s in service.status(
            SearchConfig(clip_model=config.clip_model, clip_checkpoint=config.clip_checkpoint, text_model=config.text_model)
        )
    }[name]
    if not status.available:
        return RetrieverRun(name, LABELS[name], False, status.reason)
    sc = SearchConfig(
        retriever=name,
        top_k=k_max,
        thresholds=config.thresholds,
        clip_model=config.clip_model,
        clip_checkpoint=config.clip_checkpoint,
        text_model=config.text_model,
    )
    rankings: dict[str, list[str]] = {}
    notes: Counter = Counter()
    pool = 0
    t0 = time.perf_counter()
    try:
        for i, q in enumerate(queries.queries):
            res = service.search(q.text, sc)
            pool = max(pool, res.n_candidates - res.n_excluded)
            hits = [h for h in res.hits if name != "bm25" or h.score > 0]
            rankings[q.text] = [h.lora_id for h in hits]
            notes.update(n.split(":")[0][:120] for n in res.notes if "seeds unavailable" in n)
            if progress:
                progress(done + i + 1, total)
    except CarlosError as e:
        return RetrieverRun(name, LABELS[name], False, str(e).splitlines()[0])
    lists = [rankings[q.text] for q in queries.queries]
    metrics = [diversity(lists, k, pool) for k in config.spans]
    by_cat = {}
    for cat in queries.categories():
        sub = [rankings[q.text] for q in queries.queries if q.category == cat]
        by_cat[cat] = [diversity(sub, k, pool) for k in config.spans]
    empty = sum(1 for x in lists if not x)
    out_notes = [f"{n} (x{c})" for n, c in notes.items()]
    if empty:
        out_notes.append(f"{empty} of {len(lists)} queries returned no result")
    return RetrieverRun(name, LABELS[name], True, status.reason, pool, time.perf_counter() - t0, rankings, metrics, by_cat, out_notes)


def evaluate(
    store: Any,
    queries: QuerySet,
    config: EvalConfig | None = None,
    *,
    service: Any = None,
    judge: RelevanceJudge | str | None = "auto",
    progress: Progress | None = None,
) -> EvaluationReport:
    """Run every retriever of ``config`` over ``queries``; diversity per span and, when a
    judge is available (``judge="auto"``: the real one if its weights are here; an object;
    None: skip), the top-3 relevance protocol."""
    from carlos.search.service import SearchService

    config = config or EvalConfig()
    if not queries.queries:
        raise InvalidInputError("the query set is empty")
    service = service or SearchService(store)
    t0 = time.perf_counter()
    order = config.run_order
    total = len(order) * len(queries.queries)
    runs = [
        _run_retriever(service, name, queries, config, max(config.spans), progress, i * len(queries.queries), total)
        for i, name in enumerate(order)
    ]
    relevance = judged_relevance(store, runs, judge, config.judge_top)
    return EvaluationReport(
        query_set={"id": queries.id, "n": len(queries.queries), "hash": queries.content_hash, "categories": queries.categories()},
        spans=tuple(config.spans),
        thresholds=config.thresholds,
        runs=runs,
        relevance=relevance,
        seconds=time.perf_counter() - t0,
    )


# ---------------------------------------------------------------------------- frames and figures
def evaluation_frame(report: EvaluationReport | Mapping[str, Any]) -> pd.DataFrame:
    """Tidy diversity results: retriever, label, available, category ('all' or a query
    category), span, metric, value, filled_slots, slots, pool_size."""
    d = report.to_dict() if isinstance(report, EvaluationReport) else dict(report)
    rows = []
    for name, r in d["retrievers"].items():
        if not r["available"]:
            continue
        groups = {"all": r["metrics"], **r.get("by_category", {})}
        for cat, per_span in groups.items():
            for span, m in per_span.items():
                for metric in METRICS:
                    v = m[metric]
                    rows.append(
                        {
                            "retriever": name,
                            "label": r["label"],
                            "category": cat,
                            "span": int(span),
                            "metric": metric,
                            "value": float("nan") if v is None else float(v),
                            "filled_slots": m["filled_slots"],
                            "slots": m["slots"],
                            "pool_size": r["pool_size"],
                        }
                    )
    cols = ["retriever", "label", "category", "span", "metric", "value", "filled_slots", "slots", "pool_size"]
    return pd.DataFrame(rows, columns=cols)


def relevance_frame(report: EvaluationReport | Mapping[str, Any]) -> pd.DataFrame:
    """retriever, score, queries_scored, hits_scored, hits (empty when no judge ran)."""
    d = report.to_dict() if isinstance(report, EvaluationReport) else dict(report)
    rel = d["relevance"]
    rows = [{"retriever": k, **v} for k, v in rel.get("per_retriever", {}).items()]
    return pd.DataFrame(rows, columns=["retriever", "score", "queries_scored", "hits_scored", "hits"])


def diversity_figure(frame: pd.DataFrame, metric: str = "normalized_entropy", category: str = "all") -> Any:
    """Line chart of ``metric`` against span, one line per retriever (Plotly figure)."""
    import plotly.graph_objects as go

    if metric not in METRICS:
        raise InvalidInputError(f"metric must be one of {METRICS}, got {metric!r}")
    df = frame[(frame["metric"] == metric) & (frame["category"] == category)].sort_values("span")
    fig = go.Figure()
    for name, g in df.groupby("retriever", sort=False):
        fig.add_trace(
            go.Scatter(
                x=g["span"],
                y=g["value"],
                mode="lines+markers",
                name=str(g["label"].iloc[0]),
                customdata=g[["filled_slots", "slots"]].to_numpy(),
                hovertemplate="k=%{x}: %{y:.3f}<br>%{customdata[0]} of %{customdata[1]} slots filled<extra>" + str(name) + "</extra>",
            )
        )
    title = METRIC_LABELS[metric] + ("" if category == "all" else f" ({category} queries)")
    fig.update_layout(
        title=title,
        xaxis_title="ranking span k",
        yaxis_title=METRIC_LABELS[metric],
        xaxis={"type": "log", "tickvals": sorted(df["span"].unique().tolist())},
        template="plotly_white",
        legend_title_text="retriever",
    )
    return fig


def relevance_figure(frame: pd.DataFrame, title: str = "Top-3 relevance (min-max normalized)") -> Any:
    """Bar chart of :func:`relevance_frame` (Plotly figure)."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=frame["retriever"], y=frame["score"], text=[f"{v:.3f}" for v in frame["score"]], textposition="outside"))
    fig.update_layout(title=title, yaxis_title="normalized judge score", yaxis_range=[0, 1], template="plotly_white")
    return fig


def report_text(report: EvaluationReport) -> str:
    """Human-readable tables (what ``python -m carlos evaluate`` prints)."""
    t = report.thresholds
    pools = {r.pool_size for r in report.runs if r.available}
    lines = [
        f"Evaluation: {report.query_set['n']} queries ({report.query_set['id']}), spans "
        f"{', '.join(map(str, report.spans))}; thresholds Strength <= {t.strength_max}, "
        f"Consistency >= {t.consistency_min} (pool {', '.join(map(str, sorted(pools))) or '-'} "
        "LoRAs)"
    ]
    avail = [r for r in report.runs if r.available]
    for metric in ("normalized_entropy", "effective_lora_count"):
        lines += ["", f"{METRIC_LABELS[metric]}", f"{'retriever':16s}" + "".join(f"{'k=' + str(k):>9s}" for k in report.spans)]
        for r in avail:
            vals = [getattr(m, metric) for m in r.metrics]
            lines.append(f"{r.name:16s}" + "".join(f"{v:9.3f}" if v == v else f"{'-':>9s}" for v in vals))
    lines.append("")
    for r in avail:
        full = r.metrics[-1]
        lines.append(
            f"{r.name}: {full.filled_slots} of {full.slots} slots filled at k={full.span}; "
            f"{r.seconds:.1f} s" + "".join(f"; {n}" for n in r.notes)
        )
    for r in report.runs:
        if not r.available:
            lines.append(f"{r.name}: unavailable: {r.reason.splitlines()[0]}")
    rel = report.relevance
    if rel.available:
        lines += ["", f"Top-3 relevance ({rel.judge}{'' if rel.meaningful else ', NOT meaningful: test judge'}):"]
        lines += [f"  {k:16s} {v['score']:.3f}  ({v['hits_scored']} of {v['hits']} hits scored)" for k, v in rel.per_retriever.items()]
    else:
        lines += ["", f"Top-3 relevance: not computed. {rel.reason}"]
    return "\n".join(lines)
