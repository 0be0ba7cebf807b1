"""The command line: ``python -m carlos <command> --help``.

Each command group is a module of this package with a ``register(subparsers)`` function,
listed in :data:`GROUPS` (explicit: nothing registers itself on import). Errors derived from
:class:`CarlosError` become one-line messages with exit status 2; a refused write
(:class:`PermissionDeniedError`: the identity may not write, or someone else holds the claim) exits with 3.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from carlos.cli import bench, characterize, corpus, evaluate, map, prompts, ray, report, review, search, serve, store, weights
from carlos.errors import CarlosError, PermissionDeniedError

log = logging.getLogger("carlos")

#: Every command group, in the order ``--help`` lists them.
GROUPS: tuple[Callable[[Any], None], ...] = (
    corpus.register,
    prompts.register,
    search.register,
    characterize.register,
    weights.register,
    ray.register,
    evaluate.register,
    map.register,
    review.register,
    report.register,
    serve.register,
    store.register,
    bench.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m carlos",
        description="CARLoS: characterize, search and review SDXL LoRAs by what they do.",
    )
    parser.add_argument("--db", help="DuckDB store (default: data/carlos.duckdb or $CARLOS_DB)")
    parser.add_argument(
        "--store",
        help="the store: a DuckDB file or a postgresql:// URL (default: $CARLOS_STORE, else --db); "
        "prefer $CARLOS_STORE for a URL with a password (a command line is visible to other users)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in GROUPS:
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
    except PermissionDeniedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except CarlosError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
