"""The PostgreSQL side of the store: pooled psycopg connections that answer the part of DuckDB's
Python API the repositories use (``execute``/``executemany`` and their ``fetchone``/``fetchall``/
``df()`` results, ``sql(...).to_arrow_table()``/``to_arrow_reader()``, ``register`` of an Arrow
table), so each repository's SQL and logic exist once (:mod:`carlos.store.dialect` rewrites the
words that differ).

Credentials: the URL may carry a password; :func:`redact` is what any message, log line or page
shows of it, and connection errors are re-raised without the URL (psycopg's own messages name the
host and database, never the password; they are still passed through :func:`scrub`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from carlos.errors import InvalidInputError, PermissionDeniedError, StoreBusyError, StoreUnavailableError
from carlos.store.dialect import to_postgres

#: Type OIDs whose NULLs become NaN in ``df()`` (as DuckDB's frames have them), and timestamps.
_NUMERIC_OIDS = {20, 21, 23, 700, 701, 1700}
_TIMESTAMP_OIDS = {1114, 1184}
log = logging.getLogger(__name__)

#: How long a session waits for an unreachable server (a restart takes seconds) before giving up.
RECONNECT_S = 30.0
_SCHEME = re.compile(r"^postgres(ql)?://", re.IGNORECASE)


def is_url(target: object) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL."""
    return isinstance(target, str) and bool(_SCHEME.match(target))


def redact(url: str) -> str:
    """The URL without its password or user (``postgresql://host:port/db``): what may be shown."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    query = "?…" if parts.query else ""  # host=/socket/dir, sslmode…: options, not named (a password may hide there too)
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def local_path(url: str, folder: str | Path | None = None) -> Path:
    """Where a team store's local files go (caches, uploads: ``<folder>/cache``; default: the folder of
    the default DuckDB store), named by a hash of the URL without its password: stable and secret-free."""
    from carlos.config import default_paths

    folder = default_paths().db_path.parent if folder is None else folder
    parts = urlsplit(url)
    netloc = f"{parts.hostname or ''}:{parts.port or ''}@{parts.username or ''}"
    digest = hashlib.sha256(f"{netloc}{parts.path}?{parts.query}".encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9_-]", "", parts.path.strip("/")) or "postgres"
    return Path(folder) / f"team-{name}-{digest}"


def with_database(url: str, name: str) -> str:
    """``url`` naming the database ``name`` on the same server, as the same role."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def create_database(url: str, name: str) -> str:
    """A new, empty database ``name`` on ``url``'s server (the role needs CREATEDB); returns its URL."""
    import psycopg

    if not name.isidentifier():
        raise InvalidInputError(f"not a database name: {name!r}")
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    return with_database(url, name)


def drop_database(url: str, name: str) -> None:
    """Drop ``name`` on ``url``'s server (its connections are ended), closing this process's pool of it."""
    import psycopg

    Pool.close(with_database(url, name))
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def scrub(message: str, url: str) -> str:
    """``message`` with any piece of ``url``'s credentials removed."""
    parts = urlsplit(url)
    for secret in (url, parts.password, parts.netloc):
        if secret:
            message = message.replace(secret, "***")
    return message


def _plain(value: Any) -> Any:
    """A parameter as psycopg adapts it: numpy arrays and scalars as Python lists and numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (np.generic, np.ndarray)):
        return [_plain(v) for v in value]
    return value


def _params(params: Any) -> Any:
    if params is None:
        return ()
    if isinstance(params, dict):
        return {k: _plain(v) for k, v in params.items()}
    return [_plain(v) for v in params]


class Result:
    """What ``execute`` returns: the rows of the last statement, DuckDB's way."""

    def __init__(self, columns: list[str], oids: list[int], rows: list[tuple]) -> None:
        self.columns, self.oids, self.rows = columns, oids, rows
        self._pos = 0

    @property
    def description(self) -> list[tuple[str, int]]:
        """(name, type) per column, first the name, as DB-API cursors describe them."""
        return list(zip(self.columns, self.oids))

    def fetchone(self) -> tuple | None:
        if self._pos >= len(self.rows):
            return None
        self._pos += 1
        return self.rows[self._pos - 1]

    def fetchall(self) -> list[tuple]:
        rows, self._pos = self.rows[self._pos :], len(self.rows)
        return rows

    def df(self) -> Any:
        import pandas as pd

        frame = pd.DataFrame.from_records(self.rows, columns=self.columns, coerce_float=True)
        for name, oid in zip(self.columns, self.oids):
            if oid in _NUMERIC_OIDS and frame[name].dtype == object:
                frame[name] = pd.to_numeric(frame[name], errors="coerce")
            elif oid in _TIMESTAMP_OIDS:
                frame[name] = pd.to_datetime(frame[name])
        return frame

    def arrow(self) -> Any:
        import pyarrow as pa

        return pa.table({name: [r[i] for r in self.rows] for i, name in enumerate(self.columns)})


class Relation:
    """``con.sql(query, params=…)``: run when its rows are asked for, as Arrow."""

    def __init__(self, con: PostgresConnection, sql: str, params: Any) -> None:
        self._con, self._sql, self._params = con, sql, params

    def to_arrow_table(self) -> Any:
        import pyarrow as pa

        batches = list(self.to_arrow_reader(65_536))
        if batches:  # (a column of inferred type may differ between batches: promoted to one)
            return pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="permissive")
        return self._con.execute(self._sql, self._params).arrow()  # no rows: the plain path's empty table

    def to_arrow_reader(self, batch_rows: int) -> Iterator[Any]:
        """Record batches streamed from the server in binary (vectors as whole arrays: :mod:`carlos.store.pgbinary`)."""
        return self._con.arrow_batches(self._sql, self._params, batch_rows)


class PostgresConnection:
    """One pooled connection for one store session (autocommit: ``BEGIN``/``COMMIT`` are statements)."""

    dialect = "postgres"

    def __init__(self, raw: Any, url: str) -> None:
        self._raw = raw
        self._url = url

    @contextlib.contextmanager
    def _cut_off(self) -> Iterator[None]:
        """A connection lost mid-session (server restarted or stopped) as :class:`StoreUnavailableError`:
        the server rolled back the session's open transaction, so nothing of it was written."""
        import psycopg

        try:
            yield
        except psycopg.errors.InsufficientPrivilege as e:
            raise PermissionDeniedError(
                f"the PostgreSQL store {redact(self._url)} refused this write to the role it was opened with "
                f"({scrub(str(e).strip().splitlines()[0], self._url)}): see `python -m carlos store roles --help`"
            ) from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            raise StoreUnavailableError(
                f"the PostgreSQL store {redact(self._url)} is unreachable: {scrub(str(e).strip(), self._url)}"
            ) from None

    def execute(self, sql: str, params: Any = None) -> Result:
        with self._cut_off():
            cur = self._raw.execute(to_postgres(sql), _params(params))
            if cur.description is None:
                return Result([], [], [])
            return Result([d.name for d in cur.description], [d.type_code for d in cur.description], cur.fetchall())

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._cut_off(), self._raw.cursor() as cur:
            cur.executemany(to_postgres(sql), [_params(r) for r in rows])

    def sql(self, sql: str, params: Any = None) -> Relation:
        return Relation(self, sql, params)

    def arrow_batches(self, sql: str, params: Any, batch_rows: int) -> Iterator[Any]:
        from carlos.store.pgbinary import read_batches

        with self._cut_off():
            yield from read_batches(self._raw, to_postgres(sql), _params(params), batch_rows)

    def register(self, name: str, table: Any) -> None:
        """``table`` (Arrow or pandas) as the temporary table ``name`` until :meth:`unregister`."""
        if not name.isidentifier():
            raise InvalidInputError(f"not a table name: {name!r}")
        if not hasattr(table, "schema"):  # a pandas frame, as DuckDB also takes
            import pyarrow as pa

            table = pa.Table.from_pandas(table, preserve_index=False)
        from carlos.store.pgbinary import fill_temporary_table

        with self._cut_off():
            fill_temporary_table(self._raw, name, table)

    def unregister(self, name: str) -> None:
        with self._cut_off():
            self._raw.execute(f'DROP TABLE IF EXISTS "{name}"')


class Pool:
    """The connection pool of one PostgreSQL store URL in this process (made on first use)."""

    _pools: dict[str, Pool] = {}
    _guard = threading.Lock()

    def __init__(self, url: str) -> None:
        from psycopg.types.numeric import FloatLoader
        from psycopg_pool import ConnectionPool

        def configure(conn: Any) -> None:
            conn.adapters.register_loader("numeric", FloatLoader)  # sums and averages as floats, as in DuckDB

        import psycopg

        self.url = url
        try:  # one connection first: a wrong URL is a clear error now, not a pool retrying in the background
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as e:
            raise StoreUnavailableError(f"cannot connect to the PostgreSQL store {redact(url)}: {scrub(str(e).strip(), url)}") from None
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=8,
            kwargs={"autocommit": True},
            configure=configure,
            check=ConnectionPool.check_connection,  # after a server restart, pooled connections are dead: test each
            open=True,
        )

    @classmethod
    def of(cls, url: str) -> Pool:
        with cls._guard:
            pool = cls._pools.get(url)
            if pool is None:
                pool = cls._pools[url] = cls(url)
            return pool

    @classmethod
    def close(cls, url: str) -> None:
        """Close this process's pool of ``url`` (tests dropping a database; a later use opens a new one)."""
        with cls._guard:
            pool = cls._pools.pop(url, None)
        if pool is not None:
            pool.pool.close()

    def session(self, lock_timeout: float, reconnect_s: float = RECONNECT_S) -> SessionConnection:
        """A connection holding the session lock. A server that cannot be reached (restarting,
        stopped) is retried with back-off for ``reconnect_s``, then :class:`StoreUnavailableError`;
        a server that answers but whose connections or lock stay taken for ``lock_timeout`` is
        :class:`StoreBusyError`."""
        return self._connection(SessionConnection, lock_timeout, reconnect_s)

    def reader(self, lock_timeout: float, reconnect_s: float = RECONNECT_S) -> ReaderConnection:
        """A connection in one read-only snapshot, without the session lock (retried as :meth:`session`)."""
        return self._connection(ReaderConnection, lock_timeout, reconnect_s)

    def _connection(self, kind: Any, lock_timeout: float, reconnect_s: float) -> Any:
        import psycopg
        import psycopg_pool

        start, delay, why = time.monotonic(), 0.1, ""
        while True:
            try:
                raw = self.pool.getconn(timeout=min(2.0, lock_timeout))
            except psycopg_pool.PoolTimeout:
                if self.reachable():
                    if time.monotonic() - start >= lock_timeout:
                        raise StoreBusyError(
                            f"the PostgreSQL store {redact(self.url)} gave no connection within {lock_timeout:.0f} s"
                        ) from None
                    continue
                why = "no connection can be opened"
            else:
                try:
                    return kind(self, raw, lock_timeout)
                except psycopg.OperationalError as e:  # the connection broke between the check and the lock
                    why = scrub(str(e).strip(), self.url)
            waited = time.monotonic() - start
            if waited >= reconnect_s:
                raise StoreUnavailableError(f"the PostgreSQL store {redact(self.url)} is unreachable (retried for {waited:.0f} s): {why}")
            log.warning("the PostgreSQL store %s is unreachable (%s); retrying", redact(self.url), why)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def reachable(self) -> bool:
        """Whether a new connection to the server can be opened now (2 s at most)."""
        import psycopg

        try:
            psycopg.connect(self.url, connect_timeout=2).close()
        except psycopg.Error:
            return False
        return True

    def give_back(self, raw: Any) -> None:
        self.pool.putconn(raw)


#: The advisory lock every writing session of a PostgreSQL store holds: the same one-writer-at-a-time
#: turns as the DuckDB file's lock, so every repository's read-then-write logic keeps its guarantees.
#: Page reads take none (:class:`ReaderConnection`).
SESSION_LOCK = 0x6361726C6F73  # "carlos"


class _Pooled(PostgresConnection):
    """A connection of the pool for one store session, given back by :meth:`close`."""

    _pool: Pool
    #: What :meth:`close` runs before giving the connection back (after a rollback of anything left open).
    _CLOSING: tuple[tuple[str, list[Any]], ...] = ()

    def close(self) -> None:
        import psycopg

        raw, self._raw = self._raw, None
        if raw is None:
            return
        try:
            if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                raw.execute("ROLLBACK")
            for sql, params in self._CLOSING:
                raw.execute(sql, params)
        except psycopg.Error:
            raw.close()  # a broken connection: closing it releases its lock; the pool replaces it
        finally:
            self._pool.give_back(raw)


class SessionConnection(_Pooled):
    """A pooled connection holding :data:`SESSION_LOCK` for one store session; :meth:`close` rolls
    back what was left open and unlocks."""

    def __init__(self, pool: Pool, raw: Any, timeout: float) -> None:
        super().__init__(raw, pool.url)
        self._pool = pool
        import psycopg

        try:
            raw.execute(f"SET lock_timeout = '{int(timeout * 1000)}ms'")
            raw.execute("SELECT pg_advisory_lock(%s)", [SESSION_LOCK])
        except psycopg.errors.LockNotAvailable:  # the server answers: another session holds the lock
            pool.give_back(raw)
            raise StoreBusyError(
                f"the PostgreSQL store {redact(pool.url)} stayed locked for {timeout:.0f} s by another session; "
                "retry, or check for a stuck worker"
            ) from None
        except BaseException:
            pool.give_back(raw)
            raise

    _CLOSING = (("SELECT pg_advisory_unlock(%s)", [SESSION_LOCK]),)


class ReaderConnection(_Pooled):
    """A pooled connection inside one ``REPEATABLE READ READ ONLY`` transaction: every read of the
    session sees one committed state of the store, without the session lock, so a page neither waits
    for a worker's or a reviewer's write nor holds one up (MVCC). :meth:`close` ends the snapshot (a rollback)."""

    def __init__(self, pool: Pool, raw: Any, timeout: float) -> None:
        super().__init__(raw, pool.url)
        self._pool = pool
        try:
            raw.execute(f"SET lock_timeout = '{int(timeout * 1000)}ms'")
            raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        except BaseException:
            pool.give_back(raw)
            raise


def _forget_pools() -> None:
    Pool._pools.clear()  # a forked child's pool threads are gone: it connects anew


os.register_at_fork(after_in_child=_forget_pools)
