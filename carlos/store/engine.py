"""Store sessions without the price of starting DuckDB: an in-memory DuckDB instance per store file,
kept open, that attaches the file for one session and detaches it at the end.

``duckdb.connect(file)`` builds a whole database instance, built-in function catalogue included,
and closing it tears that down again: ~15 ms of CPU per session on a 2-core VM (measured with
``bench load``'s store copy), taken under the store's lock by every session of every process, so
under load the dashboard processes and the worker queued on it. ``ATTACH`` to a kept instance and
``DETACH`` cost ~2 ms together. DETACH checkpoints and releases DuckDB's own lock on the file, so
between sessions other processes open the file exactly as before; the store's ``fcntl`` lock still
decides whose turn it is.

An instance holds only what DuckDB keeps per process (settings, the catalogue of functions, its
allocator's cache); the file's blocks are dropped at DETACH, so every session sees what the last
writer committed. Memory: ~5 MB per idle instance; after reading 100k or 300k 512-d directions the
allocator kept ~110 MB either way (not growing with the read or with repeated reads; the former
close gave it back at once), which :func:`release` returns.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

#: Instances kept per process (~5 MB each): a test run opens hundreds of stores, a server one or two.
MAX_INSTANCES = 4

_INSTANCES: OrderedDict[str, _Instance] = OrderedDict()
_GUARD = threading.Lock()
_ORPHANS: list[_Instance] = []  # instances inherited over fork(): never touched, never closed
_PROCESS_LOCKS: dict[str, threading.Lock] = {}


def _after_fork() -> None:
    _PROCESS_LOCKS.clear()  # a forked child holds no store lock
    # DuckDB's threads do not survive fork(); closing a parent's instance in the child could wait on them
    _ORPHANS.extend(_INSTANCES.values())
    _INSTANCES.clear()


os.register_at_fork(after_in_child=_after_fork)


def process_lock(lock_path: Path) -> threading.Lock:
    """The lock that this process's threads take, one after the other, before the file lock ``lock_path``."""
    key = os.path.realpath(lock_path)
    with _GUARD:
        return _PROCESS_LOCKS.setdefault(key, threading.Lock())


class AttachedConnection:
    """A store file attached to a kept instance: the DuckDB cursor's API, and :meth:`close` detaches."""

    dialect = "duckdb"

    def __init__(self, instance: _Instance, cursor: Any) -> None:
        self._instance = instance
        self._cursor = cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def close(self) -> None:
        self._instance.detach(self._cursor)


class _Instance:
    """One in-memory DuckDB instance for one store file; sessions on it take turns (the caller holds
    the store's per-process and file locks)."""

    def __init__(self, path: Path) -> None:
        import duckdb

        self.path = path
        self.alias = "store_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        # Spilled data goes where it went when the file was opened directly: next to it.
        self.con = duckdb.connect(":memory:", config={"temp_directory": f"{path}.tmp"})
        self.con.execute("SET enable_progress_bar = false")  # it would draw on stdout (--json output)
        self.closed = False
        self.users = 0  # sessions using it (changed under _GUARD)

    def release_use(self) -> None:
        with _GUARD:
            self.users -= 1

    def attach(self) -> AttachedConnection:
        cursor = self.con.cursor()
        try:
            quoted = str(self.path).replace("'", "''")
            cursor.execute(f"ATTACH '{quoted}' AS {self.alias}")
            cursor.execute(f"USE {self.alias}")
        except BaseException:
            cursor.close()
            raise
        return AttachedConnection(self, cursor)

    def detach(self, cursor: Any) -> None:
        """Detach the file (DuckDB checkpoints and releases it). A session ended with work not
        committed (a failure between statements) is rolled back first; an instance that still cannot
        let go of the file is closed, which does."""
        import duckdb

        try:
            cursor.execute("USE memory")
            try:
                cursor.execute(f"DETACH {self.alias}")
            except duckdb.TransactionException:
                cursor.execute("ROLLBACK")
                cursor.execute(f"DETACH {self.alias}")
        except BaseException:
            self.close()
            raise
        finally:
            cursor.close()
            self.release_use()

    def close(self) -> None:
        with _GUARD:
            if _INSTANCES.get(str(self.path)) is self:
                del _INSTANCES[str(self.path)]
        self.closed = True
        self.con.close()


def attach(path: Path) -> AttachedConnection:
    """``path`` attached to this process's instance for it (made on first use). The caller holds the
    store's locks; an instance is closed to keep :data:`MAX_INSTANCES` only while no session uses it."""
    key = os.path.realpath(path)
    with _GUARD:  # found and reserved at once: eviction never takes an instance a session is about to use
        instance = _INSTANCES.get(key)
        if instance is None:
            instance = _INSTANCES[key] = _Instance(Path(key))
        _INSTANCES.move_to_end(key)
        instance.users += 1
    _evict(keep=key)
    try:
        return instance.attach()
    except Exception:
        # A broken instance (DuckDB invalidates one after an internal error) must not fail every later
        # session: drop it and try once on a new one; a second failure is the file's and is raised.
        instance.close()
        with _GUARD:
            instance = _INSTANCES[key] = _Instance(Path(key))
            instance.users += 1
        try:
            return instance.attach()
        except BaseException:
            instance.release_use()
            raise


def _evict(keep: str, limit: int = MAX_INSTANCES) -> None:
    with _GUARD:
        idle = [k for k, inst in _INSTANCES.items() if k != keep and inst.users == 0]
        gone = [_INSTANCES.pop(k) for k in idle[: max(0, len(_INSTANCES) - limit)]]
    for instance in gone:
        instance.closed = True
        instance.con.close()


def release() -> None:
    """Close every kept instance of this process that no session is using (the next session makes
    a new one, ~15 ms): what DuckDB keeps allocated for them goes back at once (benchmarks measure
    memory from a clean start; a long-lived process never needs to call this)."""
    _evict(keep="", limit=0)
