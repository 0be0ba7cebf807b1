"""The store itself: ``python -m carlos store copy|roles``.

``copy`` moves everything between a DuckDB file and a PostgreSQL team store (either direction) and
verifies it; ``roles`` sets up the team store's least-privilege roles. URLs are taken from the
arguments or ``$CARLOS_STORE``; whatever is printed names a store without its credentials.
"""

from __future__ import annotations

import argparse
from typing import Any

from carlos.cli.common import add_json, emit
from carlos.config import default_paths


def _copy(args: argparse.Namespace) -> int:
    from carlos.store.store import Store
    from carlos.store.transfer import copy_store

    source = Store.open(args.source or default_paths().store)
    target = Store.open(args.target)
    report = copy_store(source, target, force=args.force)
    lines = [f"{'ok ' if t.ok else 'DIFFERS'} {t.table}: {t.source_rows} → {t.target_rows} rows" for t in report.tables]
    verdict = "verified: every table's rows and content hash agree" if report.ok else "NOT verified: see the tables marked DIFFERS"
    emit(args, report.to_dict(), "\n".join([f"copied {report.source} → {report.target}", *lines, verdict]))
    return 0 if report.ok else 1


def _roles(args: argparse.Namespace) -> int:
    from carlos.store.roles import ROLES, WRITES, apply_roles, roles_sql
    from carlos.store.store import Store

    if args.print:  # the SQL for an administrator to read or run, without connecting
        print(";\n".join(roles_sql(sorted({t for grants in WRITES.values() for t in grants}))) + ";")
        return 0
    store = Store.open(args.store_url or default_paths().store)
    statements = apply_roles(store)
    emit(args, {"store": store.where, "statements": statements}, f"roles {', '.join(ROLES)} set on {store.where}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("store", help="copy a store between DuckDB and PostgreSQL; a team store's roles")
    cmds = p.add_subparsers(dest="store_command", required=True, metavar="COMMAND")
    c = cmds.add_parser("copy", help="copy every table to another store and verify counts and content hashes")
    c.add_argument("--from", dest="source", help="a DuckDB file or postgresql:// URL (default: $CARLOS_STORE or the default store)")
    c.add_argument("--to", dest="target", required=True, help="a DuckDB file or postgresql:// URL")
    c.add_argument("--force", action="store_true", help="replace the contents of a target that is not empty")
    add_json(c)
    c.set_defaults(func=_copy)
    r = cmds.add_parser("roles", help="create a team store's dashboard, worker and read-only roles with their grants")
    r.add_argument("store_url", nargs="?", help="postgresql:// URL (default: $CARLOS_STORE); run as the tables' owner")
    r.add_argument("--print", action="store_true", help="print the SQL instead of running it")
    add_json(r)
    r.set_defaults(func=_roles)
