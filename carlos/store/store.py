"""The DuckDB store: the file, its lock, connections, migrations and the data-version stamp.

:class:`Store` owns the database file; the SQL of each area lives in a repository that
the store holds as an attribute, one module each, all inside this package:
``store.loras`` (:mod:`~carlos.store.loras`: LoRA rows, import records),
``store.reps`` (:mod:`~carlos.store.representations`: representations, corpus frame,
direction matrices, bulk paths), ``store.jobs`` (:mod:`~carlos.store.jobs`: jobs,
pair results, base-image cache, thumbnails), ``store.review``
(:mod:`~carlos.store.review`: decisions, claims, thresholds), ``store.caches``
(:mod:`~carlos.store.caches`: vector cache, text embeddings, map cache) and ``store.fingerprints``
(:mod:`~carlos.store.fingerprints`: weight fingerprints and weight-space matches).

Concurrency design (DuckDB allows one writing *process* per database file):
every operation opens a short-lived connection while holding an exclusive
``fcntl`` lock on ``<db>.lock`` and closes it at once (the file attached to a DuckDB
instance the process keeps, :mod:`~carlos.store.engine`: ~2 ms instead of ~20). The dashboard (many
sessions, one process) and characterization workers (other processes) take
turns in milliseconds; a caller that waits longer than ``lock_timeout`` gets a
:class:`StoreBusyError` naming the lock file instead of DuckDB's "database is
locked". Heavy work (generation, embedding) never happens under the lock.
``with store.session():`` reuses one connection for a group of calls, and
``with store.transaction():`` makes a group atomic, and ``with store.locked():``
makes several reads (each on its own connection) see one state.

``data_version`` in the ``meta`` table is bumped (:meth:`Store.bump`, called by the
repositories) by every write to LoRAs or representations, so readers can cache
matrices and invalidate them cheaply.
Each bump also rewrites ``<db>.version`` (a random token, replaced atomically
under the lock), so a reader learns "nothing changed" from one small file read
instead of opening the database (20-40 ms on a 2-core VM, even when nothing changed).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from carlos.errors import StoreBusyError
from carlos.store.caches import CacheRepository
from carlos.store.changes import AREAS, ChangeTable, ChangeTokens, LazyConnection, Tokens
from carlos.store.engine import attach, process_lock
from carlos.store.fingerprints import FingerprintRepository
from carlos.store.jobs import JobRepository
from carlos.store.loras import LoraRepository
from carlos.store.postgres import RECONNECT_S, Pool, is_url, local_path, redact
from carlos.store.representations import RepresentationRepository
from carlos.store.review import ReviewRepository
from carlos.store.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)


class Store:
    """Owner of the DuckDB file; open with :meth:`open` (creates and migrates).

    The SQL of each area is reached through the repositories ``loras``, ``reps``,
    ``jobs``, ``review`` and ``caches`` (see the module docstring).
    """

    #: Connections opened by every Store of this process (each costs ~17-20 ms under the lock on a
    #: 2-core VM): the page tests count them per render, ``bench load`` reports them.
    connections_opened: int = 0

    def __init__(self, path: str | Path, *, lock_timeout: float = 60.0) -> None:
        #: The PostgreSQL URL of a team store (never shown: :attr:`where` is), None for a DuckDB file.
        self.url: str | None = str(path) if is_url(path) else None
        # A team store's local folder (caches, uploads) is the data folder; its name never holds a secret.
        self.path = Path(path) if self.url is None else local_path(self.url)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout
        self._local = threading.local()
        self.stamp_path = self.path.with_name(self.path.name + ".version")
        self.changes: Tokens = ChangeTokens(self.path.with_name(self.path.name + ".changes"))
        #: How long a session waits for an unreachable PostgreSQL server (a restart) before giving up.
        self.reconnect_s = RECONNECT_S
        if self.url is not None:
            self._pool = Pool.of(self.url)
            self.changes = ChangeTable(self._pool)
        self._version_memo: tuple[str | None, int] | None = None  # (stamp token read before, version)
        self.loras = LoraRepository(self)
        self.reps = RepresentationRepository(self)
        self.jobs = JobRepository(self)
        self.review = ReviewRepository(self)
        self.caches = CacheRepository(self)
        self.fingerprints = FingerprintRepository(self)

    @classmethod
    def open(cls, path: str | Path, *, lock_timeout: float = 60.0) -> Store:
        """Open (creating the file and applying migrations if needed)."""
        store = cls(path, lock_timeout=lock_timeout)
        store.path.parent.mkdir(parents=True, exist_ok=True)
        store.migrate()
        return store

    # -- connections ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self, *, read_only: bool = False) -> Iterator[Any]:
        """A locked connection, reused by nested calls in the same thread.

        Opened on first use: a session whose reads were all answered from memory (a page model
        whose store did not change) costs no connection and never takes the lock. ``read_only``
        (:meth:`reading` on a DuckDB file): a write inside is refused.
        """
        con = getattr(self._local, "con", None)
        if con is not None:
            yield con
            return
        with self._own(LazyConnection(self._file_lock, self._connect, self.changes, read_only=read_only)) as con:
            yield con

    @contextlib.contextmanager
    def reading(self) -> Iterator[Any]:
        """A session that only reads and sees one state of the store, for a page's reads.

        On PostgreSQL: one read-only snapshot (``REPEATABLE READ``) without the session lock, so pages
        never wait for a worker's or a reviewer's write and never hold one up. On a DuckDB file: a
        :meth:`session` (the file takes one process at a time). A write inside is refused on both
        (``RuntimeError``: it is a bug). Nested in a session, it is that session.
        """
        if getattr(self._local, "con", None) is not None or self.url is None:
            with self.session(read_only=True) as con:
                yield con
            return
        with self._own(LazyConnection(contextlib.nullcontext, self._connect_reader, self.changes, read_only=True)) as con:
            yield con

    @contextlib.contextmanager
    def _own(self, con: LazyConnection) -> Iterator[LazyConnection]:
        """``con`` as this thread's session until the block ends, then closed."""
        self._local.con = con
        try:
            yield con
        finally:
            self._local.con = None
            con.close()

    def _connect_reader(self) -> Any:
        Store.connections_opened += 1
        return self._pool.reader(self.lock_timeout, self.reconnect_s)

    @property
    def where(self) -> str:
        """The store as messages and pages may name it: the file, or the URL without credentials."""
        return str(self.path) if self.url is None else redact(self.url)

    def _connect(self) -> Any:
        """The file attached to this process's DuckDB instance for it (the caller holds the file
        lock; :mod:`carlos.store.engine` says why not ``duckdb.connect``), or a pooled PostgreSQL
        connection holding the store's session lock."""
        if self.url is not None:
            con: Any = self._pool.session(self.lock_timeout, self.reconnect_s)
        else:
            con = attach(self.path)
        Store.connections_opened += 1  # under the lock: no two threads add at once
        return con

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """All-or-nothing group of writes (nested transactions join the outer one)."""
        with self.session() as con:
            if getattr(self._local, "in_tx", False) or getattr(con, "read_only", False):
                yield con  # (in a reading session: its one snapshot; a write inside is refused)
                return
            con.execute("BEGIN TRANSACTION")
            self._local.in_tx = True
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                self._version_memo = None  # it may hold this transaction's own, now undone, bump
                raise
            finally:
                self._local.in_tx = False

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock across several connections: what they read is one state.

        Unlike one :meth:`session`, each read inside gets its own connection, so DuckDB's
        memory from one read is freed before the next (``load_view`` reads a million-row
        frame, then the matrix).
        """
        if self.url is not None:  # one read-only snapshot (reading()): one state without the writers' lock,
            with self.reading() as con:  # which a million-LoRA view load would hold for a minute
                con.execute("SELECT 1")
                yield
            return
        with self._file_lock():
            yield

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if getattr(self._local, "locked", False):  # this thread holds it already (see locked())
            yield
            return
        if self.url is not None:  # PostgreSQL: the session's connection takes the lock (SessionConnection)
            self._local.locked = True
            try:
                yield
            finally:
                self._local.locked = False
            return
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout
        # The threads of this process queue on one lock per file and only the first polls the file
        # lock, briefly: a page render waiting behind others is served when its turn comes, instead of
        # losing the file, poll after poll, to newcomers (a 50 ms back-off gave 5-9 s tails under load).
        turn = process_lock(self.lock_path)
        if not turn.acquire(timeout=self.lock_timeout):
            raise self._busy()
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                delay = 0.0005
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise self._busy() from None
                        time.sleep(delay)
                        delay = min(delay * 2, 0.004)
                self._local.locked = True
                try:
                    yield
                finally:
                    self._local.locked = False
            finally:
                os.close(fd)  # closing the descriptor releases the flock
        finally:
            turn.release()

    def _busy(self) -> StoreBusyError:
        return StoreBusyError(
            f"the store {self.path} stayed locked for {self.lock_timeout:.0f} s by "
            f"another process (lock file {self.lock_path}); retry, or check for a "
            "stuck worker"
        )

    # -- schema --------------------------------------------------------------------------------
    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version."""
        if isinstance(self.changes, ChangeTable):
            self.changes.create()  # before any write: every write statement bumps a token in it
        with self.transaction() as con:
            known = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations' AND table_schema = current_schema()"
            ).fetchone()[0]
            if not known:  # a new file (an open of a current store writes nothing: cached reads stay valid)
                con.execute(
                    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                    "name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL DEFAULT now())"
                )
            done = {r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()}
            if self.changes.token() is None:  # a store from before change tokens: these now vouch for reads
                self.changes.bump(AREAS, con)
            for version, name, statements in MIGRATIONS:
                if version in done:
                    continue
                for stmt in statements:
                    con.execute(stmt)
                con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
                log.info("store %s: applied migration %d (%s)", self.where, version, name)
                self._write_stamp()  # a new or changed file: a leftover stamp must not vouch for it
                self.changes.bump(AREAS, con)
        return self.schema_version()

    def schema_version(self) -> int:
        """The newest applied migration (never newer than this code's ``SCHEMA_VERSION``)."""
        with self.session() as con:
            row = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
        version = int(row[0] or 0)
        assert version <= SCHEMA_VERSION, "store is newer than this code"
        return version

    def bump(self, con: Any) -> None:
        """Advance ``data_version`` on ``con`` (inside the caller's write) and write a new stamp.

        Every write to LoRAs or representations calls this, in the same transaction.
        """
        self._version_memo = None  # this object's own writes are seen at once
        con.execute(
            "INSERT INTO meta VALUES ('data_version', '1') ON CONFLICT (key) DO UPDATE "
            "SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS VARCHAR)"
        )
        self._write_stamp()

    def _write_stamp(self) -> None:
        """New random token in ``<db>.version``. Called under the file lock, before the commit:
        a reader that sees the new token must take the lock to read the version, so it reads
        the committed one; a rolled-back write only costs readers one needless re-read. (A team
        store has no stamp: its version is one small query.)"""
        if self.url is not None:
            return
        tmp = self.stamp_path.with_name(f"{self.stamp_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(os.urandom(16).hex())
        os.replace(tmp, self.stamp_path)  # atomic: readers see the old token or the new one

    def change_token(self, areas: Iterable[str] = AREAS) -> str | None:
        """A token that changes with every write to ``areas`` of this store, by any process (one
        small file read; see :mod:`carlos.store.changes`); None when unknown. Read it *before* the
        reads it vouches for: a write in between only costs one more read."""
        return self.changes.token(areas)

    def holds_lock(self) -> bool:
        """True while this thread holds the store's lock (a session that has read or written)."""
        return bool(getattr(self._local, "locked", False))

    def _stamp_if_possible(self) -> str | None:
        try:
            self._write_stamp()
        except OSError as e:  # a read-only folder: every call then reads the database
            log.debug("cannot write %s: %s", self.stamp_path, e)
            return None
        return self._read_stamp()

    def _read_stamp(self) -> str | None:
        if self.url is not None:
            return None
        try:
            return self.stamp_path.read_text()
        except OSError:  # no stamp yet (a store from before stamps): read the database
            return None

    def data_version(self) -> int:
        """Counter bumped on every LoRA/representation write (cache key for readers).

        Exact across processes: it is read from the database only when the stamp file's
        token changed since the last read, otherwise memoized. A store without a stamp (made
        before stamps, or copied without it) gets one here, under the lock.
        """
        token = self._read_stamp()  # before the database: a write in between only causes a re-read
        memo = self._version_memo
        if token is not None and memo is not None and memo[0] == token:
            return memo[1]
        with self.session() as con:
            row = con.execute("SELECT value FROM meta WHERE key = 'data_version'").fetchone()
            if token is None and self.url is None:  # under the lock no writer can change the version or the stamp
                token = self._read_stamp() or self._stamp_if_possible()
        version = int(row[0]) if row else 0
        self._version_memo = (token, version)
        return version

    def size_bytes(self) -> int:
        """What the store takes on disk: the file and its side files, or the PostgreSQL database."""
        if self.url is not None:
            with self.session() as con:
                return int(con.execute("SELECT pg_database_size(current_database())").fetchone()[0])
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.suffix != ".lock")

    def table_counts(self) -> dict[str, int]:
        """Row counts per table (diagnostics, tests)."""
        with self.session() as con:
            tables = [
                r[0]
                for r in con.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                    "AND table_type = 'BASE TABLE' AND table_name <> 'change_tokens' ORDER BY 1"
                ).fetchall()
            ]
            return {t: int(con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}
