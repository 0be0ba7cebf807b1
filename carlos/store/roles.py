"""Least privilege on a team store: three PostgreSQL group roles with only the grants each needs.

``carlos_dashboard``: reads everything and writes what the dashboard writes (reviews, jobs it
queues, uploads, caches, fingerprints); it runs no migration. ``carlos_worker``: reads everything,
writes job progress and results (pair results, thumbnails, rounds, base-image cache,
representations) and the caches characterization fills; it cannot touch a review decision, a claim
or the thresholds. ``carlos_readonly``: reads. The roles cannot log in: an administrator gives each
person or machine a login role of its own in one of them (``CREATE ROLE gpu7 LOGIN PASSWORD '…' IN
ROLE carlos_worker``), so a password never passes through CARLoS. Migrations run as the owner (the
URL's role when ``Store.open`` first creates the tables); run ``store roles`` again after a migration
(it revokes and grants anew: idempotent and exact).
"""

from __future__ import annotations

from carlos.errors import InvalidInputError
from carlos.store.store import Store

ROLES = ("carlos_dashboard", "carlos_worker", "carlos_readonly")

_CACHES = ("vector_cache", "text_embeddings", "map_cache", "map_cache_entries")
_RESULTS = ("pair_results", "thumbnails", "job_rounds", "base_cache")
_EVERYONE_WRITES = ("meta", "change_tokens")  # the data version and change tokens every write bumps

#: table -> privileges beyond SELECT, per role.
WRITES: dict[str, dict[str, str]] = {
    "carlos_dashboard": {
        "decisions": "INSERT",  # the audit log is append-only, for the dashboard as for everyone
        **{t: "INSERT, UPDATE, DELETE" for t in ("claims", "threshold_settings", *_CACHES, *_EVERYONE_WRITES)},
        "jobs": "INSERT, UPDATE",
        "loras": "INSERT",
        "weight_fingerprints": "INSERT, UPDATE",
        "weight_matches": "INSERT, UPDATE",
        **{t: "INSERT, UPDATE" for t in _RESULTS},  # the dashboard's in-process worker
        "representations": "INSERT, DELETE",  # a new characterization replaces the same protocol's
    },
    "carlos_worker": {
        "jobs": "UPDATE",
        **{t: "INSERT, UPDATE" for t in _RESULTS},
        "representations": "INSERT, DELETE",
        **{t: "INSERT, UPDATE, DELETE" for t in (*_CACHES, *_EVERYONE_WRITES)},
        "weight_fingerprints": "INSERT, UPDATE",
        "weight_matches": "INSERT, UPDATE",
    },
    "carlos_readonly": {},
}


def roles_sql(tables: list[str]) -> list[str]:
    """The statements that create the roles (if missing) and set their grants on ``tables`` exactly."""
    out = []
    for role in ROLES:
        out.append(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {role} NOLOGIN; END IF; END $$"
        )
        out.append(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        out.append(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}")
        out.append(f"GRANT USAGE ON SCHEMA public TO {role}")
        out.append(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        if WRITES[role]:
            out.append(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
        for table, privileges in sorted(WRITES[role].items()):
            if table in tables:
                out.append(f"GRANT {privileges} ON {table} TO {role}")
    return out


def apply_roles(store: Store) -> list[str]:
    """Create the roles and set their grants on this team store; returns the statements run."""
    if store.url is None:
        raise InvalidInputError("roles are a PostgreSQL store's: a DuckDB file has one user, the file's owner")
    statements = roles_sql([*store.table_counts(), "change_tokens"])
    with store.transaction() as con:
        for stmt in statements:
            con.execute(stmt)
    return statements
