"""``bench query|scale|characterize|adaptive|review|load|weights|map``: benchmarks measured side by side in one run
(tables in bench/README.md)."""

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
    from carlos.bench.query import DEFAULT_QUERIES, QueryBenchConfig, run_query_bench
    from carlos.bench.query_report import query_bench_markdown, query_bench_text

    if not args.query and not 1 <= args.n_queries <= len(DEFAULT_QUERIES):
        raise InvalidInputError(f"--n-queries must be between 1 and {len(DEFAULT_QUERIES)}; or pass --query")
    queries = tuple(args.query) if args.query else DEFAULT_QUERIES[: args.n_queries]
    cfg = QueryBenchConfig(
        clip_model=args.clip_model, queries=queries, ref_batch=args.ref_batch, repeats=args.repeats, warm_repeats=args.warm_repeats
    )
    bar, update = progress_bar("queries", disabled=args.quiet or args.json or args.markdown)
    result = run_query_bench(cfg, progress=update)
    close(bar)
    cmd = f"python -m carlos bench query --clip-model {args.clip_model} --n-queries {len(queries)}"
    if args.repeats != 3:
        cmd += f" --repeats {args.repeats}"
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
    from carlos.store.postgres import is_url

    team = args.store if is_url(args.store) else None  # a PostgreSQL server: each size also runs on a new database there
    store = None
    if args.db or (team is None and Path(_default_db()).exists()):  # the released directions the model is fitted on
        from carlos.store.store import Store

        store = open_store(args) if team is None else Store.open(args.db)
    bar, update = progress_bar("sizes", disabled=args.quiet or args.json or args.markdown)
    result = run_scale_bench(cfg, store=store, team_store=team, progress=update)
    close(bar)
    cmd = "python -m carlos" + (" --store postgresql://…" if team else "")
    cmd += f" bench scale --sizes {args.sizes} --n-queries {args.n_queries}"
    if args.library_max != 1_000_000:
        cmd += f" --library-max {args.library_max}"
    # (a team-store run has its own README section: the embedded store's sizes and UMAP figures stay)
    return _finish(args, "scale-team" if team else "scale", result, scale_bench_text(result), scale_bench_markdown(result, cmd))


def _default_db() -> Path:
    from carlos.config import default_paths

    return default_paths().db_path


def _bench_characterize(args: argparse.Namespace) -> int:
    import json

    from carlos.bench.characterize import CharBenchConfig, run_characterize_bench
    from carlos.bench.characterize_report import characterize_bench_markdown, characterize_bench_text

    if args.from_json:  # render a saved result (e.g. bench/gpu.sh's from a GPU machine), measure nothing
        result = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        cmd = result.get("command", "python -m carlos bench characterize")
    else:
        cfg = CharBenchConfig(
            backend=args.backend,
            protocol=args.protocol,
            n_loras=args.loras,
            ref_batch=args.ref_batch,
            seeds=args.seeds,
            adaptive_images=args.adaptive_images,
            compile_unet=args.compile_unet,
            batch_sweep=tuple(int_list(args.batch_sweep)) if args.batch_sweep else (),
        )
        result = run_characterize_bench(cfg, gpu=args.gpu)
        cmd = f"python -m carlos bench characterize --backend {args.backend} --protocol {args.protocol} --loras {args.loras}"
        for flag, value in (("--seeds", args.seeds), ("--adaptive-images", args.adaptive_images), ("--batch-sweep", args.batch_sweep)):
            cmd += f" {flag} {value}" if value else ""
        cmd += " --compile-unet" if args.compile_unet else ""
        result["command"] = cmd
    on_gpu = bool(result["cases"]) and all(c["device"].startswith("cuda") for c in result["cases"])
    name = "characterize-gpu" if on_gpu else "characterize"  # GPU results have their own README section
    return _finish(args, name, result, characterize_bench_text(result), characterize_bench_markdown(result, cmd))


def _bench_adaptive(args: argparse.Namespace) -> int:
    from carlos.bench.adaptive import AdaptiveBenchConfig, adaptive_bench_markdown, adaptive_bench_text, run_adaptive_bench
    from carlos.config import default_paths
    from carlos.core.adaptive import AdaptiveSettings
    from carlos.data.corpus import fetch_release

    splits = tuple(float(x) for x in args.splits.split(",") if x.strip())
    if not splits or not all(0.0 <= x <= 1.0 for x in splits):
        raise InvalidInputError(f"--splits must be prompt shares within [0, 1], got {args.splits!r}")
    settings = AdaptiveSettings(
        min_pairs=args.min_pairs,
        target_cosine=args.target_cosine,
        strength_half_width=args.strength_half_width,
        consistency_half_width=args.consistency_half_width,
    )
    cfg = AdaptiveBenchConfig(splits=splits, n_loras=args.loras, seed=args.seed, workers=args.workers, settings=settings)
    bar, update = progress_bar("LoRAs", disabled=args.quiet or args.json or args.markdown)
    result = run_adaptive_bench(fetch_release(default_paths().cache_dir), cfg, progress=update)
    close(bar)
    cmd = f"python -m carlos bench adaptive --splits {args.splits}" + (f" --loras {args.loras}" if args.loras else "")
    result["command"] = cmd
    return _finish(args, "adaptive", result, adaptive_bench_text(result), adaptive_bench_markdown(result, cmd))


def _bench_review(args: argparse.Namespace) -> int:
    from carlos.bench.review import ReviewBenchConfig, review_bench_markdown, review_bench_text, run_review_bench

    cfg = ReviewBenchConfig(
        sizes=int_list(args.sizes),
        open_items=args.open_items,
        level=args.level,
        repeats=args.repeats,
        workdir=args.workdir,
        keep=args.keep,
    )
    store = open_store(args) if args.db or Path(_default_db()).exists() else None
    bar, update = progress_bar("sizes", disabled=args.quiet or args.json or args.markdown)
    result = run_review_bench(cfg, store=store, progress=update)
    close(bar)
    cmd = f"python -m carlos bench review --sizes {args.sizes} --open-items {args.open_items}"
    result["command"] = cmd
    return _finish(args, "review", result, review_bench_text(result), review_bench_markdown(result, cmd))


def _bench_load(args: argparse.Namespace) -> int:
    from carlos.bench.load import LoadBenchConfig, run_load_bench
    from carlos.bench.load_report import load_bench_markdown, load_bench_text
    from carlos.store.postgres import is_url

    pages = tuple(p.strip() for p in args.pages.split(",") if p.strip())
    cfg = LoadBenchConfig(
        sessions=args.sessions,
        seconds=args.seconds,
        client=args.client,
        worker=not args.no_worker,
        think_s=args.think,
        pages=pages,
        replicas=args.replicas,
        port=args.port,
        seed=args.seed,
        workdir=args.workdir,
        store_url=args.store if is_url(args.store) else None,  # the server to run on; the data comes from the file
    )
    source = Path(args.db) if args.db else Path(_default_db())
    if not source.exists():
        raise InvalidInputError("bench load copies an existing store: run `python -m carlos corpus import` first, or pass --db")
    bar, update = progress_bar("seconds", disabled=args.quiet or args.json or args.markdown)
    result = run_load_bench(cfg, source, baseline=args.baseline, progress=update)
    close(bar)
    cmd = f"python -m carlos bench load --sessions {args.sessions} --seconds {args.seconds:g} --client {args.client}"
    cmd += f" --think {args.think:g}" if args.think != 0.5 else ""
    cmd += f" --replicas {args.replicas}" if args.replicas != 1 else ""
    cmd += f" --baseline {args.baseline}" if args.baseline else ""
    cmd += " --no-worker" if args.no_worker else ""
    cmd += " --store postgresql://…" if cfg.store_url else ""
    result["command"] = cmd
    code = _finish(args, "load", result, load_bench_text(result), load_bench_markdown(result, cmd))
    return code if result["ok"] else 1


def _bench_weights(args: argparse.Namespace) -> int:
    from carlos.bench.weights import WeightsBenchConfig, run_weights_bench
    from carlos.bench.weights_report import weights_bench_markdown, weights_bench_text

    cfg = WeightsBenchConfig(
        shapes=args.shapes,
        ranks=int_list(args.ranks),
        originals=args.originals,
        negatives=args.negatives,
        file_checks=args.file_checks,
        library_size=args.library_size,
        n_queries=args.n_queries,
        speed_rank=args.speed_rank,
        top_k=args.top_k,
        seed=args.seed,
        workdir=args.workdir,
    )
    bar, update = progress_bar("LoRAs and lookups", disabled=args.quiet or args.json or args.markdown)
    result = run_weights_bench(cfg, progress=update)
    close(bar)
    cmd = "python -m carlos bench weights" + (
        "" if cfg == WeightsBenchConfig(workdir=args.workdir) else f" --shapes {args.shapes} --ranks {args.ranks}"
    )
    result["command"] = cmd
    return _finish(args, "weights", result, weights_bench_text(result), weights_bench_markdown(result, cmd))


def _bench_map(args: argparse.Namespace) -> int:
    from carlos.bench.map import RENDERERS, MapBenchConfig, run_map_bench
    from carlos.bench.map_report import map_bench_markdown, map_bench_text

    renderers = tuple(r.strip() for r in args.renderers.split(",") if r.strip()) or RENDERERS
    sizes = tuple(int_list(args.sizes))
    cfg = MapBenchConfig(sizes=sizes, renderers=renderers, timeout_s=args.timeout, workdir=args.workdir, keep=args.keep)
    bar, update = progress_bar("size × renderer", disabled=args.quiet or args.json or args.markdown)
    result = run_map_bench(cfg, progress=update)
    close(bar)
    cmd = f"python -m carlos bench map --sizes {args.sizes}" + (f" --renderers {args.renderers}" if renderers != RENDERERS else "")
    result["command"] = cmd
    return _finish(args, "map", result, map_bench_text(result), map_bench_markdown(result, cmd))


def _add_output(p: argparse.ArgumentParser) -> None:
    add_json(p)
    add_quiet(p)
    p.add_argument("--markdown", action="store_true", help="print the README section (Markdown)")
    p.add_argument("--write-readme", action="store_true", help="rewrite this benchmark's section of bench/README.md")


def register(sub: Any) -> None:
    """``bench query|scale|characterize|adaptive|review|load|weights|map``."""
    p = sub.add_parser("bench", help="benchmarks: query directions, scale, characterization throughput")
    bsub = p.add_subparsers(dest="bench_command", required=True)

    q = bsub.add_parser("query", help="shipped (pad-to-longest) and 77-padded procedures vs prefix KV cache vs warm caches")
    add_clip_model(q, RANDOM_CLIP, "CLIP model (random weights time the same)")
    q.add_argument("--query", action="append", help="a query to time (repeatable; default: built-in ones)")
    q.add_argument("--n-queries", type=int, default=3, help="how many built-in queries (max 5)")
    q.add_argument("--ref-batch", type=int, default=64, help="batch size of the 77-padded reference encodings")
    q.add_argument("--repeats", type=int, default=3, help="shipped/cold pairs timed per query (median and range)")
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
    c.add_argument("--ref-batch", type=int, default=4, help="the reference's images per call (4 as released)")
    c.add_argument("--seeds", type=int, help="images per prompt instead of the protocol's (e.g. 16 as in paper, 8: two calls of 4)")
    c.add_argument(
        "--adaptive-images", type=int, help="LoRA images of an adaptive run for a cost row, e.g. 448 (issue 13's 10x target); not measured"
    )
    c.add_argument("--compile-unet", action="store_true", help="ours with torch.compile of the UNet (the first batch compiles)")
    c.add_argument("--batch-sweep", help="CUDA: time the UNet/VAE and peak memory at these batch sizes, e.g. 4,8,16")
    c.add_argument("--from-json", help="render a saved --json result (text, --markdown, --write-readme) instead of measuring")
    c.add_argument(
        "--gpu", choices=["auto", "off"], default="auto", help="auto: also run sdxl-random at 1024²/25 steps when CUDA is available"
    )
    _add_output(c)
    c.set_defaults(func=_bench_characterize)

    a = bsub.add_parser("adaptive", help="the adaptive protocol's stopping rule vs the full 4,480 pairs, simulated on the corpus")
    a.add_argument("--loras", type=int, help="the first N released LoRAs (default: all 740)")
    a.add_argument("--splits", default="0.25,0.5,0.75", help="prompt shares of the diff variance, e.g. 0.25,0.5,0.75")
    a.add_argument("--seed", type=int, default=0, help="seed of the synthetic clouds")
    a.add_argument("--workers", type=int, default=2, help="processes (1: this one)")
    a.add_argument("--min-pairs", type=int, default=70)
    a.add_argument("--target-cosine", type=float, default=0.99, help="expected Direction cosine to the full protocol's")
    a.add_argument("--strength-half-width", type=float, default=0.25)
    a.add_argument("--consistency-half-width", type=float, default=0.01)
    _add_output(a)
    a.set_defaults(func=_bench_adaptive)

    r = bsub.add_parser("review", help="the review page's data (queue + near-duplicate groups) on synthetic corpora")
    r.add_argument("--sizes", default="10000,100000", help="corpus sizes")
    r.add_argument("--open-items", type=int, default=1000, help="flagged or escalated items in the queue")
    r.add_argument("--level", type=float, default=0.95, help="near-duplicate level (direction cosine)")
    r.add_argument("--repeats", type=int, default=3, help="timed renders per measurement")
    r.add_argument("--workdir", help="where the synthetic stores go (default: a temporary folder)")
    r.add_argument("--keep", action="store_true", help="keep the synthetic stores")
    _add_output(r)
    r.set_defaults(func=_bench_review)

    lo = bsub.add_parser("load", help="concurrent dashboard sessions (search, detail, risk, map, review) while a worker writes")
    lo.add_argument("--sessions", type=int, default=20, help="concurrent dashboard sessions")
    lo.add_argument("--seconds", type=float, default=60.0, help="how long the sessions run")
    lo.add_argument("--client", choices=["websocket", "chromium"], default="websocket", help="what a session is")
    lo.add_argument("--no-worker", action="store_true", help="no characterization worker writing meanwhile")
    lo.add_argument("--think", type=float, default=0.5, help="each user pauses up to this many seconds between page loads")
    lo.add_argument(
        "--replicas", type=int, default=1, help="Streamlit processes: 1 = one `streamlit run`; N >= 2: behind HAProxy, as `make serve`"
    )
    lo.add_argument(
        "--baseline", metavar="REF", help="first run the same load against this git revision (a worktree), e.g. HEAD; report both"
    )
    lo.add_argument("--pages", default="risk,map,review", help="pages loaded without parameters besides search and detail ('' for none)")
    lo.add_argument("--seed", type=int, default=0, help="seed of the LoRAs drawn and of the users' choices")
    lo.add_argument("--port", type=int, help="the dashboard's public port (default: a free one)")
    lo.add_argument("--workdir", help="where the store copy and the logs go (default: a temporary folder)")
    _add_output(lo)
    lo.set_defaults(func=_bench_load)

    w = bsub.add_parser(
        "weights", help="weight-space matching: detection per transformation, false positives, fingerprint and search speed"
    )
    w.add_argument(
        "--shapes", choices=["sdxl", "tiny"], default="sdxl", help="module shapes: SDXL base 1.0's LoRA targets or the tiny test model's"
    )
    w.add_argument("--ranks", default="4,8,16", help="ranks of the synthetic LoRAs")
    w.add_argument("--originals", type=int, default=4, help="originals per rank, each transformed and looked up")
    w.add_argument("--negatives", type=int, default=200, help="unrelated LoRAs in the library")
    w.add_argument("--file-checks", type=int, default=1, help="originals per rank also converted through real files")
    w.add_argument("--library-size", type=int, default=1_000_000, help="synthetic stored fingerprints for the search latency (0: skip)")
    w.add_argument("--n-queries", type=int, default=50, help="queries for the latency percentiles")
    w.add_argument("--speed-rank", type=int, default=32, help="rank of the real-size file fingerprinted for time and memory (0: skip)")
    w.add_argument("--top-k", type=int, default=10)
    w.add_argument("--seed", type=int, default=0, help="seed of the synthetic LoRAs")
    w.add_argument("--workdir", help="where the temporary LoRA files go (default: a temporary folder)")
    _add_output(w)
    w.set_defaults(func=_bench_weights)

    mp = bsub.add_parser("map", help="the map in headless Chromium at 10k-1M synthetic LoRAs: Map page vs plotly-all vs Embedding Atlas")
    mp.add_argument("--sizes", default="10000,100000,1000000", help="corpus sizes")
    mp.add_argument("--renderers", default="page,plotly-all,atlas", help="page (the Map page), plotly-all, atlas")
    mp.add_argument("--timeout", type=float, default=600.0, help="seconds per wait in the browser")
    mp.add_argument("--workdir", help="where the synthetic stores go (default: a temporary folder)")
    mp.add_argument("--keep", action="store_true", help="keep the synthetic stores")
    _add_output(mp)
    mp.set_defaults(func=_bench_map)
