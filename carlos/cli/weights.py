"""Weight-space commands: ``fingerprint FILE... [--add]`` and ``similar-weights FILE|ID``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from carlos.cli.common import acting_user, add_backend, add_identity, add_json, add_quiet, close, emit, open_store, progress_bar
from carlos.config import DEFAULT_BACKEND
from carlos.errors import InvalidInputError


def _match_lines(matches: list[Any]) -> list[str]:
    lines = []
    for i, m in enumerate(matches, 1):
        how = "exact" if m.exact else "from fingerprints"
        lines.append(f"{i:3d}. cos {m.cosine:+.4f}  scale {m.scale:+.3g}  {m.label:34s} {m.lora_id}  ({how})")
        lines.append(f"       {m.text}")
    return lines


def _limits(args: argparse.Namespace) -> Any:
    """Upload limits for ``--backend`` (tiny also accepts the tiny test LoRAs)."""
    from carlos.characterize.jobs import limits_for
    from carlos.weights.canonical import READ_LIMITS

    return limits_for(args.backend, READ_LIMITS)


def _fingerprint(args: argparse.Namespace) -> int:
    from carlos.characterize import fingerprints

    store = open_store(args) if args.add else None
    limits = _limits(args)
    out, lines = [], []
    bar, update = progress_bar("files", unit="file", disabled=args.quiet or args.json or len(args.files) < 2)
    for i, name in enumerate(args.files):
        path = Path(name)
        if not path.is_file():
            raise InvalidInputError(f"no file at {path}")
        if store is not None:
            res = fingerprints.register(store, path, user=acting_user(args), limits=limits, top_k=args.top_k)
            fp, matches = res.fingerprint, res.matches
            related = [m for m in matches if m.label != "unrelated"]
            out.append(
                {"path": str(path), "lora_id": res.lora_id, "stored": True, **fp.to_dict(), "matches": [m.to_dict() for m in related]}
            )
            lines.append(f"{path}: stored as {res.lora_id} ({len(fp.names)} modules, {fp.format}); {len(related)} weight-space match(es)")
            lines += _match_lines(related)
        else:
            fp = fingerprints.fingerprint_file(path, limits=limits)
            out.append({"path": str(path), "lora_id": f"sha256:{fp.sha256}", "stored": False, **fp.to_dict()})
            blocks = ", ".join(f"{b['block']} {b['share']:.0%}" for b in fp.stats["blocks"][:4])
            lines.append(f"{path}: {len(fp.names)} modules ({fp.format}), ‖ΔW‖ {fp.norm:.4g}, energy {blocks}")
        if update is not None:
            update(i + 1, len(args.files))
    close(bar)
    if not args.add and not args.json:
        print("(not stored; --add stores the fingerprints)", file=sys.stderr)
    emit(args, out, "\n".join(lines))
    return 0


def _similar_weights(args: argparse.Namespace) -> int:
    from carlos.characterize import fingerprints

    if args.top_k < 1:
        raise InvalidInputError(f"--top-k must be at least 1, got {args.top_k}")
    store = open_store(args)
    res = fingerprints.similar_weights(store, args.query, top_k=args.top_k, limits=_limits(args), modules=args.modules)
    data = {
        "query": args.query,
        "lora_id": res.lora_id,
        "stored": res.stored,
        "fingerprint": res.fingerprint.to_dict(vector=False),
        "matches": [m.to_dict() for m in res.matches],
    }
    head = f"{args.query}: {len(res.matches)} match(es) among {len(fingerprints.fingerprint_index(store))} stored fingerprints"
    emit(args, data, "\n".join([head, *_match_lines(res.matches)]))
    return 0


def register(sub: Any) -> None:
    """``fingerprint``, ``similar-weights``."""
    p = sub.add_parser("fingerprint", help="weight-space fingerprints of LoRA files (no GPU, no images); --add stores them")
    p.add_argument("files", nargs="+", metavar="FILE", help=".safetensors LoRA files (validated first)")
    p.add_argument("--add", action="store_true", help="store the fingerprints and their weight-space matches in the store")
    p.add_argument("--top-k", type=int, default=10, help="with --add: how many stored fingerprints to relate each file to")
    add_backend(p, DEFAULT_BACKEND)
    add_identity(p)
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=_fingerprint)

    p = sub.add_parser("similar-weights", help="stored LoRAs with the same or related weights: copies, rescales, rank reductions, merges")
    p.add_argument("query", metavar="FILE|ID", help="a .safetensors file, or a fingerprinted LoRA's id, sha256 or version id")
    p.add_argument("--top-k", type=int, default=10, help="how many matches")
    p.add_argument("--modules", type=int, default=20, help="per-module rows per match in --json (those sharing the most energy)")
    add_backend(p, DEFAULT_BACKEND)
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=_similar_weights)
