"""Review on the command line: ``python -m carlos review claim|release|decide|log|export``.

Every write acts as ``--reviewer EMAIL`` (default ``$CARLOS_REVIEWER``, else the OS user),
checked by the library against the same reviewer list as the dashboard (``[carlos]
reviewers`` of secrets.toml, or ``$CARLOS_REVIEWERS``; neither: local mode). A refused
identity exits with status 3, one line on stderr, and nothing written.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from carlos.cli.common import acting_user, add_identity, add_json, emit, open_store
from carlos.errors import InvalidInputError


def _printable(value: Any) -> str:
    """Creator text (names, notes) for a terminal: no control characters (escape sequences)."""
    text = "" if value is None else str(value)
    return "".join(c if c.isprintable() else " " for c in text)


def _claim(args: argparse.Namespace) -> int:
    from carlos.review import workflow as review

    store, user = open_store(args), acting_user(args)
    review.claim(store, args.lora, user)
    lora_id = store.loras.resolve(args.lora)
    emit(args, {"lora_id": lora_id, "claimed_by": user.name}, f"{user.name} claimed {lora_id}")
    return 0


def _release(args: argparse.Namespace) -> int:
    from carlos.review import workflow as review

    store, user = open_store(args), acting_user(args)
    released = review.release(store, args.lora, user, force=args.force)
    lora_id = store.loras.resolve(args.lora)
    text = f"{user.name} released the claim on {lora_id}" if released else f"{lora_id} was not claimed: nothing to release"
    emit(args, {"lora_id": lora_id, "released": released, "by": user.name}, text)
    return 0


def _decide(args: argparse.Namespace) -> int:
    from carlos.review import workflow as review

    store, user = open_store(args), acting_user(args)
    decision_id = review.decide(store, args.lora, user, args.decision, args.note, require_claim=not args.no_claim)
    lora_id = store.loras.resolve(args.lora)
    status = review.status_of(store, lora_id)
    out = {"decision_id": decision_id, "lora_id": lora_id, "reviewer": user.name, "action": args.decision, "status": status}
    emit(args, out, f"decision {decision_id}: {user.name} {args.decision} {lora_id} (now {status})")
    return 0


def _log(args: argparse.Namespace) -> int:
    from carlos.review.audit import audit_records

    records = audit_records(open_store(args), args.lora, limit=args.limit)
    lines = []
    for r in records:
        if r["lora_id"]:
            what = f"{r['lora_id']} ({_printable(r['name'])})"
        else:
            what = f"Strength ≤ {r['strength_max']}, Consistency ≥ {r['consistency_min']}"
        change = f"  {r['status_before']} → {r['status_after']}" if r["event"] == "decision" else ""
        note = f"  note: {_printable(r['note'])}" if r["note"] else ""
        lines.append(f"{r['at']}  {r['event']:10s} {_printable(r['reviewer'])}  {r['action']}  {what}{change}{note}")
    emit(args, records, "\n".join(lines) if lines else "the audit log is empty")
    return 0


def _export(args: argparse.Namespace) -> int:
    from carlos.review.audit import audit_log, export_audit

    store = open_store(args)
    data = export_audit(store, args.format)
    out = Path(args.output).expanduser()
    tmp = out.with_name(out.name + ".part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)  # a reader never sees half a file
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise InvalidInputError(f"cannot write the audit log to {out}: {e.strerror or e}") from e
    n = len(audit_log(store))
    emit(args, {"path": str(out), "format": args.format, "events": n, "bytes": len(data)}, f"wrote {n} event(s) to {out} ({args.format})")
    return 0


def register(sub: Any) -> None:
    """``review`` and its commands."""
    from carlos.review.audit import EXPORT_FORMATS
    from carlos.review.workflow import ACTIONS

    group = sub.add_parser("review", help="claim, decide and read the audit log (as a listed reviewer)")
    cmds = group.add_subparsers(dest="review_command", required=True, metavar="COMMAND")

    p = cmds.add_parser("claim", help="claim a LoRA before deciding on it")
    p.add_argument("lora", help="lora_id, Civitai version id or sha256")
    add_identity(p)
    add_json(p)
    p.set_defaults(func=_claim)

    p = cmds.add_parser("release", help="release your claim on a LoRA")
    p.add_argument("lora", help="lora_id, Civitai version id or sha256")
    p.add_argument("--force", action="store_true", help="release someone else's claim (recorded with whose it was)")
    add_identity(p)
    add_json(p)
    p.set_defaults(func=_release)

    p = cmds.add_parser("decide", help="record a decision on a LoRA you claimed")
    p.add_argument("lora", help="lora_id, Civitai version id or sha256")
    p.add_argument("--decision", required=True, choices=list(ACTIONS), help="; ".join(f"{a}: status {s}" for a, s in ACTIONS.items()))
    p.add_argument("--note", help="kept in the audit log")
    p.add_argument("--no-claim", action="store_true", help="decide on an unclaimed LoRA directly (as bulk flagging does)")
    add_identity(p)
    add_json(p)
    p.set_defaults(func=_decide)

    p = cmds.add_parser("log", help="the audit log: decisions, claims and releases, threshold changes (newest first)")
    p.add_argument("--lora", help="only this LoRA's events (lora_id, Civitai version id or sha256)")
    p.add_argument("--limit", type=int, help="at most this many events")
    add_json(p)
    p.set_defaults(func=_log)

    p = cmds.add_parser("export", help="write the whole audit log to a file")
    p.add_argument("--format", choices=list(EXPORT_FORMATS), default="csv", help="csv (formula prefixes neutralized), json or parquet")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="the file to write")
    add_json(p)
    p.set_defaults(func=_export)
