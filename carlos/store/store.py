"""The DuckDB store: every SQL statement of CARLoS lives in this module.

Concurrency design (DuckDB allows one writing *process* per database file):
every operation opens a short-lived connection while holding an exclusive
``fcntl`` lock on ``<db>.lock`` and closes it at once. The dashboard (many
sessions, one process) and characterization workers (other processes) take
turns in milliseconds; a caller that waits longer than ``lock_timeout`` gets a
:class:`StoreBusyError` naming the lock file instead of DuckDB's "database is
locked". Heavy work (generation, embedding) never happens under the lock.
``with store.session():`` reuses one connection for a group of calls, and
``with store.transaction():`` makes a group atomic, and ``with store.locked():``
makes several reads (each on its own connection) see one state.

``data_version`` in the ``meta`` table is bumped by every write to LoRAs or
representations, so readers can cache matrices and invalidate them cheaply.
Each bump also rewrites ``<db>.version`` (a random token, replaced atomically
under the lock), so a reader learns "nothing changed" from one small file read
instead of opening the database (20-40 ms on a 2-core VM, even when nothing changed).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from carlos.errors import InvalidInputError, NotFoundError, StoreBusyError
from carlos.store.bulk import BulkSQL
from carlos.store.jobs import JobsSQL
from carlos.store.review import ReviewSQL
from carlos.store.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

REVIEW_ACTIONS = ("approve", "flag", "escalate", "reopen")
JOB_STATES = ("queued", "running", "finished", "failed", "cancelled")


@dataclass(frozen=True)
class StoredRepresentation:
    """One row of ``representations`` with its direction as numpy."""

    rep_id: int
    lora_id: str
    embedder: str
    direction: np.ndarray
    strength: float
    consistency: float
    n_samples: int | None
    provenance: dict[str, Any]


class Store(ReviewSQL, JobsSQL, BulkSQL):
    """Owner of the DuckDB file; open with :meth:`open` (creates and migrates)."""

    def __init__(self, path: str | Path, *, lock_timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout
        self._local = threading.local()
        self.stamp_path = self.path.with_name(self.path.name + ".version")
        self._version_memo: tuple[str | None, int] | None = None  # (stamp token read before, version)

    @classmethod
    def open(cls, path: str | Path, *, lock_timeout: float = 60.0) -> Store:
        """Open (creating the file and applying migrations if needed)."""
        store = cls(path, lock_timeout=lock_timeout)
        store.path.parent.mkdir(parents=True, exist_ok=True)
        store.migrate()
        return store

    # -- connections ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """A locked connection, reused by nested calls in the same thread."""
        con = getattr(self._local, "con", None)
        if con is not None:
            yield con
            return
        import duckdb

        with self._file_lock():
            con = duckdb.connect(str(self.path))
            con.execute("SET enable_progress_bar = false")  # it would draw on stdout (--json output)
            self._local.con = con
            try:
                yield con
            finally:
                self._local.con = None
                con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """All-or-nothing group of writes (nested transactions join the outer one)."""
        with self.session() as con:
            if getattr(self._local, "in_tx", False):
                yield con
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
        with self._file_lock():
            yield

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if getattr(self._local, "locked", False):  # this thread holds it already (see locked())
            yield
            return
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.lock_timeout
            delay = 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StoreBusyError(
                            f"the store {self.path} stayed locked for {self.lock_timeout:.0f} s by "
                            f"another process (lock file {self.lock_path}); retry, or check for a "
                            "stuck worker"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
            self._local.locked = True
            try:
                yield
            finally:
                self._local.locked = False
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    # -- schema --------------------------------------------------------------------------------
    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version."""
        with self.transaction() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()}
            for version, name, statements in MIGRATIONS:
                if version in done:
                    continue
                for stmt in statements:
                    con.execute(stmt)
                con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
                log.info("store %s: applied migration %d (%s)", self.path, version, name)
                self._write_stamp()  # a new or changed file: a leftover stamp must not vouch for it
        return self.schema_version()

    def schema_version(self) -> int:
        with self.session() as con:
            row = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
        version = int(row[0] or 0)
        assert version <= SCHEMA_VERSION, "store is newer than this code"
        return version

    def _bump(self, con: Any) -> None:
        self._version_memo = None  # this object's own writes are seen at once
        con.execute(
            "INSERT INTO meta VALUES ('data_version', '1') ON CONFLICT (key) DO UPDATE "
            "SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS VARCHAR)"
        )
        self._write_stamp()

    def _write_stamp(self) -> None:
        """New random token in ``<db>.version``. Called under the file lock, before the commit:
        a reader that sees the new token must take the lock to read the version, so it reads
        the committed one; a rolled-back write only costs readers one needless re-read."""
        tmp = self.stamp_path.with_name(f"{self.stamp_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(os.urandom(16).hex())
        os.replace(tmp, self.stamp_path)  # atomic: readers see the old token or the new one

    def _stamp_if_possible(self) -> str | None:
        try:
            self._write_stamp()
        except OSError as e:  # a read-only folder: every call then reads the database
            log.debug("cannot write %s: %s", self.stamp_path, e)
            return None
        return self._read_stamp()

    def _read_stamp(self) -> str | None:
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
            if token is None:  # under the lock no writer can change the version or the stamp
                token = self._read_stamp() or self._stamp_if_possible()
        version = int(row[0]) if row else 0
        self._version_memo = (token, version)
        return version

    def table_counts(self) -> dict[str, int]:
        """Row counts per table (diagnostics, tests)."""
        with self.session() as con:
            tables = [r[0] for r in con.execute("SHOW TABLES").fetchall()]
            return {t: int(con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}

    # -- imports -------------------------------------------------------------------------------
    def import_record(self, source: str, file_sha256: str) -> dict[str, Any] | None:
        with self.session() as con:
            df = con.execute("SELECT * FROM imports WHERE source = ? AND file_sha256 = ?", [source, file_sha256]).df()
        return None if df.empty else df.iloc[0].to_dict()

    def imports(self) -> list[dict[str, Any]]:
        with self.session() as con:
            return con.execute("SELECT * FROM imports ORDER BY imported_at").df().to_dict("records")

    def record_import(self, source: str, file_sha256: str, rows: int, details: dict) -> None:
        with self.session() as con:
            con.execute(
                "INSERT INTO imports (source, file_sha256, rows, details) VALUES (?, ?, ?, ?) ON CONFLICT (source, file_sha256) DO NOTHING",
                [source, file_sha256, rows, json.dumps(details)],
            )

    # -- LoRAs -------------------------------------------------------------------------------
    _LORA_COLUMNS = (
        "lora_id",
        "source",
        "version_id",
        "model_id",
        "name",
        "description",
        "nsfw_level",
        "folder_name",
        "download_count",
        "sha256",
        "file_path",
        "file_report",
        "trigger_words",
    )

    def upsert_loras(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert LoRAs, leaving existing ids untouched; returns how many were new."""
        if not rows:
            return 0
        cols = self._LORA_COLUMNS
        values = []
        for r in rows:
            if not r.get("lora_id"):
                raise InvalidInputError("every LoRA row needs a lora_id")
            unknown = set(r) - set(cols)
            if unknown:
                raise InvalidInputError(f"unknown LoRA fields {sorted(unknown)}")
            row = dict(r)
            if isinstance(row.get("file_report"), dict):
                row["file_report"] = json.dumps(row["file_report"])
            values.append([row.get(c) for c in cols])
        with self.transaction() as con:
            before = con.execute("SELECT count(*) FROM loras").fetchone()[0]
            con.executemany(
                f"INSERT INTO loras ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) ON CONFLICT (lora_id) DO NOTHING",
                values,
            )
            added = con.execute("SELECT count(*) FROM loras").fetchone()[0] - before
            if added:
                self._bump(con)
        return int(added)

    def get_lora(self, key: str | int) -> dict[str, Any]:
        """A LoRA by lora_id, Civitai version id or sha256; raises NotFoundError."""
        lora_id = self.resolve_lora_id(key)
        with self.session() as con:
            df = con.execute("SELECT * FROM loras WHERE lora_id = ?", [lora_id]).df()
        row = df.iloc[0].to_dict()
        if row.get("file_report"):
            row["file_report"] = json.loads(row["file_report"])
        return row

    def resolve_lora_id(self, key: str | int) -> str:
        text = str(key).strip()
        with self.session() as con:
            found = con.execute(
                "SELECT lora_id FROM loras WHERE lora_id = ? OR sha256 = ? OR CAST(version_id AS VARCHAR) = ? ORDER BY lora_id LIMIT 1",
                [text, text.lower(), text],
            ).fetchone()
        if not found:
            raise NotFoundError(f"no LoRA with id, version id or sha256 {text!r} in {self.path}")
        return found[0]

    def find_by_sha256(self, sha256: str) -> str | None:
        with self.session() as con:
            row = con.execute("SELECT lora_id FROM loras WHERE sha256 = ?", [sha256]).fetchone()
        return row[0] if row else None

    # -- representations -----------------------------------------------------------------------
    _REP_PROVENANCE = (
        "protocol",
        "prompt_set",
        "prompt_hash",
        "seeds",
        "steps",
        "scale",
        "backend",
        "source",
        "source_hash",
        "code_version",
        "job_id",
    )

    def put_representation(
        self,
        lora_id: str,
        embedder: str,
        direction: np.ndarray,
        strength: float,
        consistency: float,
        n_samples: int | None,
        provenance: dict[str, Any],
    ) -> int:
        """Store (or replace, for the same LoRA/embedder/protocol/backend) a representation."""
        return self.put_representations(
            [
                dict(
                    lora_id=lora_id,
                    embedder=embedder,
                    direction=direction,
                    strength=strength,
                    consistency=consistency,
                    n_samples=n_samples,
                    **provenance,
                )
            ]
        )[0]

    def put_representations(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Bulk form of :meth:`put_representation`; one transaction."""
        cols = ("lora_id", "embedder", "dim", "direction", "strength", "consistency", "n_samples", *self._REP_PROVENANCE, "extra")
        values = []
        for r in rows:
            vec = np.asarray(r["direction"], dtype=np.float32).ravel()
            if vec.size == 0 or not np.isfinite(vec).all():
                raise InvalidInputError(f"direction of {r['lora_id']} is empty or not finite")
            for key in ("strength", "consistency"):
                if not np.isfinite(float(r[key])):
                    raise InvalidInputError(f"{key} of {r['lora_id']} is not finite")
            extra = {k: v for k, v in r.items() if k not in cols}
            row = {**r, "dim": int(vec.size), "direction": vec.tolist(), "extra": json.dumps(extra)}
            if row.get("seeds") is not None and not isinstance(row["seeds"], str):
                row["seeds"] = json.dumps(list(row["seeds"]))
            values.append([row.get(c) for c in cols])
        placeholders = ", ".join("?" * len(cols))
        with self.transaction() as con:
            ids = []
            for v in values:
                con.execute(
                    "DELETE FROM representations WHERE lora_id = ? AND embedder = ? "
                    "AND protocol IS NOT DISTINCT FROM ? AND backend IS NOT DISTINCT FROM ?",
                    [v[0], v[1], v[cols.index("protocol")], v[cols.index("backend")]],
                )
                ids.append(
                    con.execute(
                        f"INSERT INTO representations ({', '.join(cols)}) VALUES ({placeholders}) RETURNING rep_id",
                        v,
                    ).fetchone()[0]
                )
            self._bump(con)
        return [int(i) for i in ids]

    def embedders(self) -> dict[str, int]:
        """Embedder id → number of LoRAs represented in that space."""
        with self.session() as con:
            rows = con.execute("SELECT embedder, count(DISTINCT lora_id) FROM representations GROUP BY 1 ORDER BY 2 DESC").fetchall()
        return {e: int(n) for e, n in rows}

    def corpus_frame(self, embedder: str) -> Any:
        """One row per LoRA represented in ``embedder`` space (latest representation),
        with metadata and the values, without vectors; a pandas DataFrame."""
        with self.session() as con:
            return con.execute(
                """
                SELECT l.lora_id, l.version_id, l.model_id,
                       coalesce(nullif(trim(l.name), ''), l.folder_name, l.lora_id) AS name,
                       l.nsfw_level, l.download_count, l.source, l.sha256, l.folder_name,
                       r.rep_id, r.strength, r.consistency, r.n_samples, r.protocol, r.backend,
                       r.created_at AS characterized_at
                FROM loras l JOIN (
                    SELECT *, row_number() OVER (PARTITION BY lora_id ORDER BY created_at DESC,
                                                 rep_id DESC) AS k
                    FROM representations WHERE embedder = ?) r
                  ON r.lora_id = l.lora_id AND r.k = 1
                ORDER BY r.rep_id
                """,
                [embedder],
            ).df()

    def direction_matrix(self, embedder: str) -> tuple[list[str], np.ndarray]:
        """(lora ids, float32 (n, dim) matrix) in :meth:`corpus_frame` order, via Arrow."""
        with self.session() as con:
            table = con.sql(
                """
                SELECT lora_id, direction FROM (
                    SELECT lora_id, direction, rep_id, row_number() OVER (
                        PARTITION BY lora_id ORDER BY created_at DESC, rep_id DESC) AS k
                    FROM representations WHERE embedder = ?) WHERE k = 1 ORDER BY rep_id
                """,
                params=[embedder],
            ).to_arrow_table()
        ids = table.column("lora_id").to_pylist()
        if not ids:
            return [], np.zeros((0, 0), dtype=np.float32)
        col = table.column("direction").combine_chunks()
        flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        return ids, flat.reshape(len(ids), -1)

    def representations_of(self, lora_id: str) -> list[StoredRepresentation]:
        with self.session() as con:
            df = con.execute(
                "SELECT * FROM representations WHERE lora_id = ? ORDER BY created_at DESC, rep_id DESC",
                [lora_id],
            ).df()
        out = []
        for r in df.to_dict("records"):
            prov = {k: r[k] for k in self._REP_PROVENANCE}
            prov.update(json.loads(r["extra"] or "{}"))
            prov["created_at"] = r["created_at"]
            out.append(
                StoredRepresentation(
                    rep_id=int(r["rep_id"]),
                    lora_id=r["lora_id"],
                    embedder=r["embedder"],
                    direction=np.asarray(r["direction"], dtype=np.float32),
                    strength=float(r["strength"]),
                    consistency=float(r["consistency"]),
                    n_samples=None if r["n_samples"] != r["n_samples"] else int(r["n_samples"]),
                    provenance=prov,
                )
            )
        return out

    # -- query and text caches ----------------------------------------------------------------
    def get_cached_vector(self, kind: str, key: str) -> tuple[np.ndarray, dict] | None:
        """A cached vector (query direction, text embedding…) and its info, or None."""
        with self.session() as con:
            row = con.execute("SELECT vector, info FROM vector_cache WHERE kind = ? AND cache_key = ?", [kind, key]).fetchone()
        if row is None:
            return None
        return np.asarray(row[0], dtype=np.float32), json.loads(row[1] or "{}")

    def put_cached_vector(self, kind: str, key: str, vector: np.ndarray, info: dict) -> None:
        vec = np.asarray(vector, dtype=np.float32).ravel()
        with self.session() as con:
            con.execute(
                "INSERT INTO vector_cache (kind, cache_key, vector, info) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind, cache_key) DO UPDATE SET vector = excluded.vector, "
                "info = excluded.info, created_at = now()",
                [kind, key, vec.tolist(), json.dumps(info, default=str)],
            )

    def count_cached(self, kind: str) -> int:
        with self.session() as con:
            return int(con.execute("SELECT count(*) FROM vector_cache WHERE kind = ?", [kind]).fetchone()[0])

    def text_documents(self) -> Any:
        """lora_id, name, description, folder_name of every LoRA (textual baselines)."""
        with self.session() as con:
            return con.execute("SELECT lora_id, name, description, folder_name FROM loras ORDER BY lora_id").df()

    def get_text_matrix(self, model: str) -> tuple[list[str], list[str], np.ndarray] | None:
        with self.session() as con:
            table = con.sql(
                "SELECT lora_id, text_hash, vector FROM text_embeddings WHERE model = ? ORDER BY lora_id",
                params=[model],
            ).to_arrow_table()
        if table.num_rows == 0:
            return None
        flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        ids = table.column("lora_id").to_pylist()
        hashes = table.column("text_hash").to_pylist()
        return ids, hashes, flat.astype(np.float32).reshape(len(ids), -1)

    def put_text_matrix(self, model: str, ids: Sequence[str], hashes: Sequence[str], matrix: np.ndarray) -> None:
        with self.transaction() as con:
            con.execute("DELETE FROM text_embeddings WHERE model = ?", [model])
            con.executemany(
                "INSERT INTO text_embeddings (lora_id, model, text_hash, vector) VALUES (?, ?, ?, ?)",
                [[i, model, h, v.tolist()] for i, h, v in zip(ids, hashes, np.asarray(matrix))],
            )

    # -- maps ---------------------------------------------------------------------------------
    def get_map(self, map_key: str) -> Any:
        """Cached 2-D coordinates (lora_id, x, y) of a map, empty frame if absent."""
        with self.session() as con:
            return con.execute("SELECT lora_id, x, y FROM map_cache WHERE map_key = ? ORDER BY lora_id", [map_key]).df()

    def put_map(self, map_key: str, ids: Sequence[str], xy: np.ndarray) -> None:
        xy = np.asarray(xy, dtype=np.float64)
        if xy.shape != (len(ids), 2):
            raise InvalidInputError(f"map coordinates must be ({len(ids)}, 2), got {xy.shape}")
        with self.transaction() as con:
            con.execute("DELETE FROM map_cache WHERE map_key = ?", [map_key])
            con.executemany(
                "INSERT INTO map_cache (map_key, lora_id, x, y) VALUES (?, ?, ?, ?)",
                [[map_key, i, float(x), float(y)] for i, (x, y) in zip(ids, xy)],
            )
