"""``bench query|scale|characterize``: benchmarks measured side by side in one run (tables in bench/README.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from carlos.cli.common import (
    add_alias,
    add_backend,
    add_clip_model,
    add_json,
    add_protocol,
    add_quiet,
    close,
    emit,
    int_list,
    open_store,
    progress_bar,
)
from carlos.config import DEFAULT_BACKEND, RANDOM_CLIP
from carlos.errors import InvalidInputError


def _finish(args: argparse.Namespace, name: str, result: dict[str, Any], text: str, markdown: str) -> int:
    if args.write_readme:
        from carlos.bench.common import update_readme

        path = update_readme(name, markdown)
        print(f"updated the {name} section of {path}", file=sys.stderr)
    if args.markdown:
        print(markdown)
    else:
        emit(args, result, text)
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
    cfg = QueryBenchConfig(clip_model=args.clip_model, queries=queries, ref_batch=args.ref_batch, warm_repeats=args.warm_repeats)
    bar, update = progress_bar("queries", disabled=args.quiet or args.json or args.markdown)
    result = run_query_bench(cfg, progress=update)
    close(bar)
    cmd = f"python -m carlos bench query --clip-model {args.clip_model} --n-queries {len(queries)}"
    return _finish(args, "query", result, query_bench_text(result), query_bench_markdown(result, cmd))


def _bench_scale(args: argparse.Namespace) -> int:
    from carlos.bench.scale import ScaleBenchConfig, run_scale_bench
    from carlos.bench.scale_report import scale_bench_markdown, scale_bench_text

    cfg = ScaleBenchConfig(
        sizes=int_list(args.sizes),
        queries=args.n_queries,
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
    bar, update = progress_bar("sizes", disabled=args.quiet or args.json or args.markdown)
    result = run_scale_bench(cfg, store=store, progress=update)
    close(bar)
    cmd = f"python -m carlos bench scale --sizes {args.sizes} --n-queries {args.n_queries}"
    if args.library_max != 1_000_000:
        cmd += f" --library-max {args.library_max}"
    return _finish(args, "scale", result, scale_bench_text(result), scale_bench_markdown(result, cmd))


def _default_db() -> Path:
    from carlos.config import default_paths

    return default_paths().db_path


def _bench_characterize(args: argparse.Namespace) -> int:
    from carlos.bench.characterize import CharBenchConfig, run_characterize_bench
    from carlos.bench.characterize_report import characterize_bench_markdown, characterize_bench_text

    cfg = CharBenchConfig(backend=args.backend, protocol=args.protocol, n_loras=args.loras, ref_batch=args.ref_batch)
    result = run_characterize_bench(cfg, gpu=args.gpu)
    cmd = f"python -m carlos bench characterize --protocol {args.protocol} --loras {args.loras}"
    return _finish(args, "characterize", result, characterize_bench_text(result), characterize_bench_markdown(result, cmd))


def _add_output(p: argparse.ArgumentParser) -> None:
    add_json(p)
    add_quiet(p)
    p.add_argument("--markdown", action="store_true", help="print the README section (Markdown)")
    p.add_argument("--write-readme", action="store_true", help="rewrite this benchmark's section of bench/README.md")


def register(sub: Any) -> None:
    """``bench query|scale|characterize``."""
    p = sub.add_parser("bench", help="benchmarks: query directions, scale, characterization throughput")
    bsub = p.add_subparsers(dest="bench_command", required=True)

    q = bsub.add_parser("query", help="reference procedure vs prefix KV cache vs warm caches, one process")
    add_clip_model(q, RANDOM_CLIP, "CLIP model (random weights time the same)")
    q.add_argument("--query", action="append", help="a query to time (repeatable; default: built-in ones)")
    q.add_argument("--n-queries", type=int, default=3, help="how many built-in queries (max 5)")
    q.add_argument("--ref-batch", type=int, default=64, help="batch size of the reference encodings")
    q.add_argument("--warm-repeats", type=int, default=20, help="repeats per warm measurement")
    _add_output(q)
    q.set_defaults(func=_bench_query)

    s = bsub.add_parser("scale", help="synthetic corpora: import, store size, filtered top-k, memory, UMAP")
    s.add_argument("--sizes", default="10000,100000,1000000", help="corpus sizes")
    s.add_argument("--n-queries", type=int, default=50, help="queries for the latency percentiles")
    add_alias(s, "--queries", "--n-queries", "n_queries", type=int)
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
    add_backend(c, DEFAULT_BACKEND)
    add_protocol(c, "quick")
    c.add_argument("--loras", type=int, default=3, help="how many test LoRAs")
    c.add_argument("--ref-batch", type=int, default=4, help="the reference's generation batch")
    c.add_argument(
        "--gpu", choices=["auto", "off"], default="auto", help="auto: also run sdxl-random at 1024²/25 steps when CUDA is available"
    )
    _add_output(c)
    c.set_defaults(func=_bench_characterize)
