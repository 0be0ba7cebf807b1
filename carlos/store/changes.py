"""What changed since a cached read: per-area change tokens, and the lazy session connection that sets them.

Every write statement that goes through a :meth:`Store.session <carlos.store.store.Store.session>`
replaces, before it runs and under the store's lock, the random token of the *area* its table
belongs to in ``<db>.changes`` (a few lines of text, replaced atomically). A reader reads the
tokens of the areas its data comes from *before* reading the data, and keeps what it read under
them (:func:`carlos.pagemodels.common.cached_read`): while the tokens are unchanged, no process
has written anything it shows. Areas keep a worker's stream of pair results and heartbeats from
invalidating the risk or review pages, which read nothing of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from carlos.store.dialect import to_postgres

log = logging.getLogger(__name__)

#: The areas a write can change; a statement on a table not listed in :data:`TABLE_AREAS` changes "data".
#: "queue" changes only when a job is added or removed (which LoRAs have jobs), "jobs" with every job
#: write (heartbeats, pair results, images, rounds).
AREAS = ("data", "review", "jobs", "queue", "caches")
TABLE_AREAS = {
    "decisions": "review",
    "claims": "review",
    "threshold_settings": "review",
    "jobs": "jobs",
    "pair_results": "jobs",
    "thumbnails": "jobs",
    "job_rounds": "jobs",
    "base_cache": "jobs",
    "vector_cache": "caches",
    "text_embeddings": "caches",
    "map_cache": "caches",
    "map_cache_entries": "caches",
}
#: First words of the statements that change the database.
WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "COPY", "MERGE", "TRUNCATE", "UPSERT"})
_TABLE = re.compile(r'^(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM|MERGE\s+INTO|UPSERT\s+INTO)\s+"?(\w+)', re.IGNORECASE)

#: An update of nothing but a cache entry's ``last_used`` (its LRU stamp, refreshed by reads).
_BOOKKEEPING = re.compile(r"^UPDATE\s+(?:vector_cache|map_cache_entries)\s+SET\s+last_used\s*=\s*\?\s+WHERE\b", re.IGNORECASE)


def written_areas(sql: str) -> frozenset[str]:
    """The areas a statement changes: none for a read, every area for schema changes and for
    what cannot be told (``CREATE``, ``ALTER``, ``COPY``…), else its table's area."""
    text = sql.lstrip()
    while text.startswith("--"):
        text = text.split("\n", 1)[1].lstrip() if "\n" in text else ""
    if not text or text.split(None, 1)[0].upper() not in WRITES:
        return frozenset()
    if _BOOKKEEPING.match(text):
        return frozenset()  # a cache entry's last use: eviction order, not anything a page shows
    m = _TABLE.match(text)
    if not m:
        return frozenset(AREAS)
    table = m.group(1).lower()
    if table == "jobs" and not text[:6].upper().startswith("UPDATE"):
        return frozenset({"jobs", "queue"})  # a job added or removed: the set of LoRAs with jobs changes
    return frozenset({TABLE_AREAS.get(table, "data")})


class Tokens(Protocol):
    """Per-area change tokens: a file beside a DuckDB store, a table in a PostgreSQL one."""

    def token(self, areas: Iterable[str] = AREAS) -> str | None: ...

    def bump(self, areas: Iterable[str], con: Any = None) -> None: ...


class ChangeTokens:
    """The ``<db>.changes`` file: one ``area=token`` line per area (a PostgreSQL store keeps them
    in a table: :class:`ChangeTable`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, str]:
        try:
            text = self.path.read_text()
        except OSError:
            return {}
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def token(self, areas: Iterable[str] = AREAS) -> str | None:
        """The tokens of ``areas`` as one string, or None when one is unknown (a store nobody has
        opened since change tokens exist): then nothing may be cached on it."""
        tokens = self._read()
        parts = [tokens.get(a) for a in areas]
        return None if None in parts else "|".join(str(p) for p in parts)

    def bump(self, areas: Iterable[str], con: Any = None) -> None:
        """New tokens for ``areas`` (the caller holds the store's lock, so no update is lost); a
        read-only folder only costs readers their caches. ``con``: the writing session's connection
        (a PostgreSQL store's tokens are rows, written in the writer's transaction)."""
        tokens = self._read()
        tokens.update({a: os.urandom(12).hex() for a in areas})
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text("".join(f"{a}={tokens[a]}\n" for a in sorted(tokens)))
            os.replace(tmp, self.path)  # atomic: readers see the old tokens or the new ones
        except OSError as e:
            log.debug("cannot write %s: %s", self.path, e)


class LazyConnection:
    """The connection of one store session: locks and connects on first use (a session answered
    from memory costs nothing), bumps the change tokens of the areas a statement writes before it
    runs, and closes and unlocks at :meth:`close`. Everything else is the DuckDB connection's."""

    def __init__(
        self,
        lock: Callable[[], contextlib.AbstractContextManager[None]],
        connect: Callable[[], Any],
        tokens: Tokens,
        *,
        read_only: bool = False,
    ) -> None:
        self._lock_factory = lock
        self._connect = connect
        self._tokens = tokens
        self._con: Any = None
        self._lock: contextlib.AbstractContextManager[None] | None = None
        self._bumped: set[str] = set()
        #: A session of :meth:`Store.reading <carlos.store.store.Store.reading>`: a write is a bug, refused on both backends.
        self.read_only = read_only

    def _open(self) -> Any:
        if self._con is None:
            lock = self._lock_factory()
            lock.__enter__()
            try:
                self._con = self._connect()
            except BaseException:
                lock.__exit__(None, None, None)
                raise
            self._lock = lock
        return self._con

    def _refuse_writes(self, sql: str) -> None:
        if self.read_only and written_areas(sql):
            raise RuntimeError(f"a write inside a reading session (Store.reading): {sql.strip()[:60]!r}")

    def _writing(self, sql: str) -> None:
        areas = written_areas(sql) - self._bumped
        if areas:
            self._bumped |= areas
            self._tokens.bump(areas, self._con)

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._refuse_writes(sql)
        con = self._open()
        self._writing(sql)
        return con.execute(sql, *args, **kwargs)

    def executemany(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._refuse_writes(sql)
        con = self._open()
        self._writing(sql)
        return con.executemany(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._open(), name)

    def close(self) -> None:
        if self._con is None:
            return
        try:
            self._con.close()
        finally:
            self._con = None
            lock, self._lock = self._lock, None
            if lock is not None:
                lock.__exit__(None, None, None)


class ChangeTable:
    """A PostgreSQL store's per-area change tokens, as rows of ``change_tokens`` (:class:`Tokens`):
    written in the writer's transaction, read with one small query."""

    def __init__(self, pool: Any) -> None:
        """``pool``: the store's :class:`carlos.store.postgres.Pool`."""
        self._pool = pool

    def create(self) -> None:
        """The table, if missing (two processes creating it at once: one wins, the other finds it)."""
        import psycopg

        with self._pool.pool.connection() as raw:
            if raw.execute("SELECT to_regclass('change_tokens')").fetchone()[0] is not None:
                return  # (a role without CREATE on the schema may not even ask CREATE TABLE IF NOT EXISTS)
            try:
                raw.execute("CREATE TABLE IF NOT EXISTS change_tokens (area text PRIMARY KEY, token text NOT NULL)")
            except psycopg.errors.UniqueViolation:
                pass

    def token(self, areas: Any = None) -> str | None:
        wanted = tuple(AREAS if areas is None else areas)
        with self._pool.pool.connection() as raw:
            try:
                tokens = dict(raw.execute("SELECT area, token FROM change_tokens").fetchall())
            except Exception:  # no table yet: a store being created
                return None
        parts = [tokens.get(a) for a in wanted]
        return None if None in parts else "|".join(str(p) for p in parts)

    def bump(self, areas: Any, con: Any = None) -> None:
        rows = [(a, os.urandom(12).hex()) for a in areas]
        sql = "INSERT INTO change_tokens (area, token) VALUES (?, ?) ON CONFLICT (area) DO UPDATE SET token = excluded.token"
        if con is not None:
            con.executemany(sql, rows)
            return
        with self._pool.pool.connection() as raw:
            raw.cursor().executemany(to_postgres(sql), rows)
