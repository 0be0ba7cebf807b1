"""CLI commands ``evaluate`` and ``bench query|scale|characterize``; registered into :mod:`carlos.cli.main`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from carlos.cli.main import _emit, _json_default, add_json, add_threshold_options, command, open_store, thresholds_from
from carlos.errors import InvalidInputError, WeightsUnavailableError


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t.replace("_", "")) for t in _csv(text))
    except ValueError:
        raise InvalidInputError(f"expected comma-separated integers, got {text!r}") from None


def _progress(desc: str, quiet: bool):  # noqa: ANN202
    if quiet:
        return None, None
    from tqdm import tqdm

    bar = tqdm(desc=desc, dynamic_ncols=True, file=sys.stderr)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


# -- evaluate -----------------------------------------------------------------------------------
def _no_text_model(model: str | None) -> Any:
    raise WeightsUnavailableError("the text model was disabled with --no-text-model")


def _evaluate(args: argparse.Namespace) -> int:
    from carlos.evaluate.harness import EvalConfig, evaluate, load_queries, report_text
    from carlos.search.service import SearchService

    store = open_store(args)
    queries = load_queries(args.queries, categories=_csv(args.categories) if args.categories else None, limit=args.limit)
    config = EvalConfig(
        retrievers=tuple(_csv(args.retrievers)),
        spans=_ints(args.spans),
        thresholds=thresholds_from(args),
        include_carlos=not args.no_carlos,
        clip_model=args.clip_model,
        clip_checkpoint=args.clip_checkpoint,
        text_model=args.text_model,
    )
    service = SearchService(store, text_embedder_factory=_no_text_model) if args.no_text_model else None
    bar, update = _progress("evaluate", args.json or args.quiet)
    report = evaluate(store, queries, config, service=service, judge=None if args.judge == "none" else "auto", progress=update)
    if bar is not None:
        bar.close()
    data = report.to_dict(rankings=args.rankings)
    if args.save:
        Path(args.save).write_text(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False))
    _emit(args, data, report_text(report))
    return 0


@command
def _register_evaluate(sub: Any) -> None:
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
    p.add_argument("--queries", help="query set JSON (default data/eval_queries.json)")
    p.add_argument("--categories", help="comma-separated query categories to keep")
    p.add_argument("--limit", type=int, help="first N queries of every category (quick runs)")
    p.add_argument("--spans", default="1,3,5,10,20", help="ranking spans k")
    p.add_argument("--clip-model", default="ViT-B-32/openai", help="CLIP registry name for carlos")
    p.add_argument("--clip-checkpoint", help="path to the CLIP weights file")
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threshold_options(p)
    add_json(p)
    p.set_defaults(func=_evaluate)


# -- bench --------------------------------------------------------------------------------------
def _finish(args: argparse.Namespace, name: str, result: dict[str, Any], text: str, markdown: str) -> int:
    if args.write_readme:
        from carlos.bench.common import update_readme

        path = update_readme(name, markdown)
        print(f"updated the {name} section of {path}", file=sys.stderr)
    if args.markdown:
        print(markdown)
    else:
        _emit(args, result, text)
    return 0


def _bench_query(args: argparse.Namespace) -> int:
    from carlos.bench.query import (
        DEFAULT_QUERIES,
        QueryBenchConfig,
        query_bench_markdown,
        query_bench_text,
        run_query_bench,
    )

    if not args.query and not 1 <= args.n_queries <= len(DEFAULT_QUERIES):
        raise InvalidInputError(f"--n-queries must be between 1 and {len(DEFAULT_QUERIES)}; or pass --query")
    queries = tuple(args.query) if args.query else DEFAULT_QUERIES[: args.n_queries]
    cfg = QueryBenchConfig(clip_model=args.clip, queries=queries, ref_batch=args.ref_batch, warm_repeats=args.warm_repeats)
    bar, update = _progress("queries", args.json or args.markdown)
    result = run_query_bench(cfg, progress=update)
    if bar is not None:
        bar.close()
    cmd = f"python -m carlos bench query --clip {args.clip} --n-queries {len(queries)}"
    return _finish(args, "query", result, query_bench_text(result), query_bench_markdown(result, cmd))


def _bench_scale(args: argparse.Namespace) -> int:
    from carlos.bench.scale import ScaleBenchConfig, run_scale_bench, scale_bench_markdown, scale_bench_text

    cfg = ScaleBenchConfig(
        sizes=_ints(args.sizes),
        queries=args.queries,
        top_k=args.top_k,
        umap_min=args.umap_min,
        umap_max=args.umap_max,
        umap_sample=args.umap_sample,
        library_max=args.library_max,
        isolate=not args.no_isolate,
        workdir=args.workdir,
        keep=args.keep,
    )
    store = None
    if args.db or Path(_default_db()).exists():
        store = open_store(args)
    bar, update = _progress("sizes", args.json or args.markdown)
    result = run_scale_bench(cfg, store=store, progress=update)
    if bar is not None:
        bar.close()
    cmd = f"python -m carlos bench scale --sizes {args.sizes} --queries {args.queries}"
    if args.library_max != 1_000_000:
        cmd += f" --library-max {args.library_max}"
    return _finish(args, "scale", result, scale_bench_text(result), scale_bench_markdown(result, cmd))


def _default_db() -> Path:
    from carlos.config import default_paths

    return default_paths().db_path


def _bench_characterize(args: argparse.Namespace) -> int:
    from carlos.bench.characterize import (
        CharBenchConfig,
        characterize_bench_markdown,
        characterize_bench_text,
        run_characterize_bench,
    )

    cfg = CharBenchConfig(backend=args.backend, protocol=args.protocol, n_loras=args.loras, ref_batch=args.ref_batch)
    result = run_characterize_bench(cfg, gpu=args.gpu)
    cmd = f"python -m carlos bench characterize --protocol {args.protocol} --loras {args.loras}"
    return _finish(args, "characterize", result, characterize_bench_text(result), characterize_bench_markdown(result, cmd))


def _add_output(p: argparse.ArgumentParser) -> None:
    add_json(p)
    p.add_argument("--markdown", action="store_true", help="print the README section (Markdown)")
    p.add_argument("--write-readme", action="store_true", help="rewrite this benchmark's section of bench/README.md")


@command
def _register_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmarks: query directions, scale, characterization throughput")
    bsub = p.add_subparsers(dest="bench_command", required=True)

    q = bsub.add_parser("query", help="reference procedure vs prefix KV cache vs warm caches, one process")
    q.add_argument("--clip", default="ViT-B-32/random", help="CLIP registry name (random weights time the same)")
    q.add_argument("--query", action="append", help="a query to time (repeatable; default: built-in ones)")
    q.add_argument("--n-queries", type=int, default=3, help="how many built-in queries (max 5)")
    q.add_argument("--ref-batch", type=int, default=64, help="batch size of the reference encodings")
    q.add_argument("--warm-repeats", type=int, default=20, help="repeats per warm measurement")
    _add_output(q)
    q.set_defaults(func=_bench_query)

    s = bsub.add_parser("scale", help="synthetic corpora: import, store size, filtered top-k, memory, UMAP")
    s.add_argument("--sizes", default="10000,100000,1000000", help="corpus sizes")
    s.add_argument("--queries", type=int, default=50, help="queries for the latency percentiles")
    s.add_argument("--top-k", type=int, default=10)
    s.add_argument("--umap-min", type=int, default=100_000, help="run UMAP from this size on")
    s.add_argument("--umap-max", type=int, default=1_000_000, help="and up to this size")
    s.add_argument("--umap-sample", type=int, default=20_000, help="points UMAP is fitted on")
    s.add_argument("--library-max", type=int, default=1_000_000, help="also time load_view + ranking.by_direction up to this size")
    s.add_argument("--workdir", help="where the synthetic stores go (default: a temporary folder)")
    s.add_argument("--keep", action="store_true", help="keep the synthetic stores")
    s.add_argument("--no-isolate", action="store_true", help="run stages in this process (tests)")
    _add_output(s)
    s.set_defaults(func=_bench_scale)

    c = bsub.add_parser("characterize", help="images/s of our worker vs the reference procedure")
    c.add_argument("--backend", default="tiny", help="diffusion backend on this machine (default tiny)")
    c.add_argument("--protocol", default="quick", help="paper | quick | smoke")
    c.add_argument("--loras", type=int, default=3, help="how many test LoRAs")
    c.add_argument("--ref-batch", type=int, default=4, help="the reference's generation batch")
    c.add_argument(
        "--gpu", choices=["auto", "off"], default="auto", help="auto: also run sdxl-random at 1024²/25 steps when CUDA is available"
    )
    _add_output(c)
    c.set_defaults(func=_bench_characterize)
