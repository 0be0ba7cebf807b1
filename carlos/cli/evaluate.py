"""``evaluate``: diversity per retriever over the evaluation queries, and top-3 relevance where a judge runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from carlos.cli.common import (
    add_alias,
    add_clip_model,
    add_json,
    add_quiet,
    add_threshold_options,
    close,
    csv_list,
    emit,
    int_list,
    json_default,
    open_store,
    progress_bar,
    thresholds_from,
)
from carlos.config import CORPUS_EMBEDDER
from carlos.errors import WeightsUnavailableError


def _no_text_model(model: str | None) -> Any:
    raise WeightsUnavailableError("the text model was disabled with --no-text-model")


def _evaluate(args: argparse.Namespace) -> int:
    from carlos.evaluate.harness import EvalConfig, evaluate, load_queries, report_text
    from carlos.search.service import SearchService

    store = open_store(args)
    queries = load_queries(args.query_file, categories=csv_list(args.categories) if args.categories else None, limit=args.limit)
    config = EvalConfig(
        retrievers=tuple(csv_list(args.retrievers)),
        spans=int_list(args.spans),
        thresholds=thresholds_from(args),
        include_carlos=not args.no_carlos,
        clip_model=args.clip_model,
        clip_checkpoint=args.clip_checkpoint,
        text_model=args.text_model,
    )
    service = SearchService(store, text_embedder_factory=_no_text_model) if args.no_text_model else None
    bar, update = progress_bar("evaluate", disabled=args.json or args.quiet)
    report = evaluate(store, queries, config, service=service, judge=None if args.judge == "none" else "auto", progress=update)
    close(bar)
    data = report.to_dict(rankings=args.rankings)
    if args.save:
        Path(args.save).write_text(json.dumps(data, indent=2, default=json_default, ensure_ascii=False))
    emit(args, data, report_text(report))
    return 0


def register(sub: Any) -> None:
    """``evaluate``."""
    p = sub.add_parser(
        "evaluate",
        help="diversity (Normalized Entropy, Effective LoRA Count) per retriever "
        "over the evaluation queries, and top-3 relevance when a judge is available",
    )
    p.add_argument(
        "--retrievers",
        default="bm25,behaviour,text-embedding",
        help="comma-separated retrievers; carlos is added unless --no-carlos (reported unavailable, with the reason, without CLIP weights)",
    )
    p.add_argument("--no-carlos", action="store_true", help="do not add the carlos retriever")
    p.add_argument("--query-file", metavar="PATH", help="query set JSON (default data/eval_queries.json)")
    add_alias(p, "--queries", "--query-file", "query_file")
    p.add_argument("--categories", help="comma-separated query categories to keep")
    p.add_argument("--limit", type=int, help="first N queries of every category (quick runs)")
    p.add_argument("--spans", default="1,3,5,10,20", help="ranking spans k")
    add_clip_model(p, CORPUS_EMBEDDER, "CLIP model of the carlos retriever")
    p.add_argument("--clip-checkpoint", help="CLIP ViT-B-32 weights: a transformers folder or an open_clip file")
    p.add_argument("--text-model", help="sentence-transformers model name or folder")
    p.add_argument(
        "--no-text-model",
        action="store_true",
        help="never load a text model: text-embedding is reported unavailable and behaviour search is seeded by BM25 only (fast on CPU)",
    )
    p.add_argument(
        "--judge",
        choices=["auto", "none"],
        default="auto",
        help="auto: run the top-3 relevance protocol when CLIP + SDXL weights and the LoRA files are here; none: skip it",
    )
    p.add_argument("--save", help="also write the JSON report to this file (for the dashboard)")
    p.add_argument("--rankings", action="store_true", help="include every ranked list in the JSON")
    add_quiet(p)
    add_threshold_options(p)
    add_json(p)
    p.set_defaults(func=_evaluate)
