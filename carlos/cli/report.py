"""``report``: the case file of one or more LoRAs (HTML, PDF or JSON), and ``report --verify FILE``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from carlos.cli.common import add_json, emit, open_store
from carlos.errors import InvalidInputError


def _thresholds(args: argparse.Namespace) -> Any:
    """The thresholds given on the command line, or None: the reviewers' saved ones (else the paper's)."""
    from carlos.config import Thresholds

    given = args.strength_max is not None or args.consistency_min is not None or args.no_strength_filter or args.no_consistency_filter
    if not given:
        return None
    from carlos.review import workflow

    saved = workflow.current_thresholds(open_store(args))
    s = None if args.no_strength_filter else (saved.strength_max if args.strength_max is None else args.strength_max)
    c = None if args.no_consistency_filter else (saved.consistency_min if args.consistency_min is None else args.consistency_min)
    return Thresholds(strength_max=s, consistency_min=c)


def _format(args: argparse.Namespace) -> str:
    from carlos.report.export import FORMATS

    if args.format:
        return args.format
    suffix = Path(args.output).suffix.lower().lstrip(".") if args.output else ""
    return suffix if suffix in FORMATS else "html"


def _write(path: Path, content: bytes) -> None:
    """Write atomically: a reader never sees half a case file."""
    if path.is_dir():
        raise InvalidInputError(f"-o {path} is a folder; name the file to write")
    if not path.parent.exists():
        raise InvalidInputError(f"-o {path}: the folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def _verify(args: argparse.Namespace) -> int:
    from carlos.report.export import verify

    path = Path(args.verify)
    if not path.is_file():
        raise InvalidInputError(f"--verify {path}: no such file")
    result = verify(path.read_bytes())
    emit(args, {"path": str(path), **result.to_dict()}, f"{path}: {result.message}")
    return 0 if result.ok else 1


def _report(args: argparse.Namespace) -> int:
    if args.verify:
        if args.lora:
            raise InvalidInputError("give LoRA ids to make a case file, or --verify FILE to check one, not both")
        return _verify(args)
    if not args.lora:
        raise InvalidInputError("name at least one LoRA (Civitai version id, lora_id or sha256), or --verify FILE")
    from carlos.report.build import ReportConfig
    from carlos.report.export import case_file
    from carlos.review.access import local_identity

    fmt = _format(args)
    config = ReportConfig(thresholds=_thresholds(args), top_k=args.top_k, reveal=args.reveal, generated_by=local_identity())
    out = case_file(open_store(args), args.lora, fmt, config)
    path = Path(args.output) if args.output else Path(out.file_name)
    _write(path, out.content)
    info = {
        "path": str(path),
        "format": fmt,
        "bytes": len(out.content),
        "sha256": out.sha256,
        "lora_ids": out.lora_ids,
        "reveal": args.reveal,
    }
    emit(args, info, f"wrote {path} ({fmt}, {len(out.content):,} bytes) for {', '.join(out.lora_ids)}; sha256 of its data {out.sha256}")
    return 0


def register(sub: Any) -> None:
    """``report``."""
    p = sub.add_parser(
        "report",
        help="case file of LoRAs: identification, measurements, thresholds, neighbours, review history, provenance, sha256",
        description="Write the case file of one or more LoRAs as self-contained HTML, PDF or JSON, with a sha256 over its "
        "data printed in it; or check one with --verify FILE.",
    )
    p.add_argument("lora", nargs="*", help="Civitai version id, lora_id or sha256 (several: one case file for all)")
    p.add_argument("--format", choices=["html", "pdf", "json"], help="default: from the -o suffix, else html")
    p.add_argument("-o", "--output", metavar="PATH", help="file to write (default: carlos-case-<id>.<format> here)")
    p.add_argument("--reveal", action="store_true", help="include image pairs unblurred (default: blurred in the file itself)")
    p.add_argument("--top-k", type=int, default=10, help="neighbours per kind (default 10)")
    p.add_argument("--strength-max", type=float, help="threshold for this report (default: the saved thresholds, else the paper's 9.8)")
    p.add_argument(
        "--consistency-min", type=float, help="threshold for this report (default: the saved thresholds, else the paper's 0.041)"
    )
    p.add_argument("--no-strength-filter", action="store_true", help="disable the Strength filter")
    p.add_argument("--no-consistency-filter", action="store_true", help="disable the Consistency filter")
    p.add_argument(
        "--verify", metavar="FILE", help="check a JSON or HTML case file: its data against the printed sha256, its page against its data"
    )
    add_json(p)
    p.set_defaults(func=_report)
