"""SQL for derived data kept so it is not recomputed: ``store.caches``.

Owns the vector cache (query directions and other vectors keyed by a hash of what they
depend on), the text embeddings of the textual baselines, and the 2-D map coordinates.
Everything here can be rebuilt from the LoRAs and representations, so nothing bumps
``data_version``.

Reading fills two of these caches: any visitor's new query adds a vector, a reviewer's map
fit adds a map. Both are bounded (:class:`carlos.config.CacheLimits`: entries and logical
bytes, overridable by ``CARLOS_CACHE_*`` variables) and evict the least recently used entry
first when a put goes over a limit. A read refreshes an entry's last-used time (unix seconds,
``last_used``) only when it is older than ``touch_interval_s``, so a hot entry costs one
small write a minute at most, not one per read. An entry larger than a whole byte limit is
not stored (the put returns False) rather than emptying the cache for it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from carlos.config import CacheLimits
from carlos.errors import InvalidInputError
from carlos.store.base import Database

log = logging.getLogger(__name__)

#: Bytes counted per map point besides its id and the map key: x and y as float64.
MAP_POINT_BYTES = 16
#: Bytes counted per vector component (stored as FLOAT).
VECTOR_COMPONENT_BYTES = 4


@dataclass(frozen=True)
class CacheUsage:
    """Entries and logical bytes one cache holds now, and its limits."""

    entries: int
    bytes: int
    max_entries: int
    max_bytes: int


def vector_entry_bytes(kind: str, key: str, n_components: int, info_json: str) -> int:
    """Logical size of one vector-cache entry: its floats, keys and info text."""
    return VECTOR_COMPONENT_BYTES * n_components + len(kind.encode()) + len(key.encode()) + len(info_json.encode())


def map_entry_bytes(map_key: str, ids: Sequence[str]) -> int:
    """Logical size of one cached map: per point its coordinates, id and the map key."""
    key_bytes = len(map_key.encode())
    return sum(MAP_POINT_BYTES + key_bytes + len(str(i).encode()) for i in ids)


# The window that ranks entries for eviction: the entry just written first, then most recently used.
_RANKED = (
    "SELECT rowid AS rid, "
    "row_number() OVER (ORDER BY ({match}) DESC, last_used DESC NULLS LAST, {key}) AS rank, "
    "sum(nbytes) OVER (ORDER BY ({match}) DESC, last_used DESC NULLS LAST, {key} "
    "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS total FROM {table}"
)


class CacheRepository:
    """Vector cache, text embeddings and map cache of one store (``store.caches``).

    ``limits`` default to :meth:`CacheLimits.from_env`; ``clock`` (unix seconds) is
    injectable so tests can order uses without sleeping.
    """

    def __init__(self, db: Database, limits: CacheLimits | None = None, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.limits = limits or CacheLimits.from_env()
        self.clock = clock

    def _stale(self, last_used: float | None, now: float) -> bool:
        return last_used is None or now - float(last_used) >= self.limits.touch_interval_s

    # -- vector cache --------------------------------------------------------------------------
    def get_vector(self, kind: str, key: str) -> tuple[np.ndarray, dict] | None:
        """A cached vector (query direction, text embedding…) and its info, or None."""
        with self._db.session() as con:
            row = con.execute("SELECT vector, info, last_used FROM vector_cache WHERE kind = ? AND cache_key = ?", [kind, key]).fetchone()
            if row is None:
                return None
            now = self.clock()
            if self._stale(row[2], now):
                _touch(con, "UPDATE vector_cache SET last_used = ? WHERE kind = ? AND cache_key = ?", [now, kind, key])
        return np.asarray(row[0], dtype=np.float32), json.loads(row[1] or "{}")

    def has_vector(self, kind: str, key: str) -> bool:
        """Whether a vector is cached under ``(kind, key)`` (no last-used refresh: a look, not a use)."""
        with self._db.session() as con:
            return con.execute("SELECT 1 FROM vector_cache WHERE kind = ? AND cache_key = ?", [kind, key]).fetchone() is not None

    def put_vector(self, kind: str, key: str, vector: np.ndarray, info: dict) -> bool:
        """Cache (or replace) a vector and its info under ``(kind, key)``, evicting the least
        recently used entries beyond the limits. False: too large to cache, nothing written."""
        vec = np.asarray(vector, dtype=np.float32).ravel()
        info_json = json.dumps(info, default=str)
        nbytes = vector_entry_bytes(kind, key, vec.size, info_json)
        if nbytes > self.limits.vector_max_bytes:
            log.warning("not caching %s %s: %d bytes exceed the vector cache's %d", kind, key, nbytes, self.limits.vector_max_bytes)
            return False
        with self._db.transaction() as con:
            con.execute(
                "INSERT INTO vector_cache (kind, cache_key, vector, info, last_used, nbytes) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (kind, cache_key) DO UPDATE SET vector = excluded.vector, info = excluded.info, "
                "created_at = now(), last_used = excluded.last_used, nbytes = excluded.nbytes",
                [kind, key, vec.tolist(), info_json, self.clock(), nbytes],
            )
            self._evict(
                con,
                "vector_cache",
                "kind || '/' || cache_key",
                "kind = ? AND cache_key = ?",
                [kind, key],
                self.limits.vector_max_entries,
                self.limits.vector_max_bytes,
            )
        return True

    def vector_usage(self) -> CacheUsage:
        """How full the vector cache is."""
        with self._db.session() as con:
            n, b = con.execute("SELECT count(*), coalesce(sum(nbytes), 0) FROM vector_cache").fetchone()
        return CacheUsage(int(n), int(b), self.limits.vector_max_entries, self.limits.vector_max_bytes)

    # -- text embeddings -----------------------------------------------------------------------
    def get_text_matrix(self, model: str) -> tuple[list[str], list[str], np.ndarray] | None:
        """(lora ids, text hashes, float32 (n, dim) matrix) embedded by ``model``, or None."""
        with self._db.session() as con:
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
        """Replace every text embedding of ``model``, in one transaction."""
        with self._db.transaction() as con:
            con.execute("DELETE FROM text_embeddings WHERE model = ?", [model])
            con.executemany(
                "INSERT INTO text_embeddings (lora_id, model, text_hash, vector) VALUES (?, ?, ?, ?)",
                [[i, model, h, v.tolist()] for i, h, v in zip(ids, hashes, np.asarray(matrix))],
            )

    # -- maps ---------------------------------------------------------------------------------
    def has_map(self, map_key: str) -> bool:
        """Whether a map is cached under ``map_key`` (no last-used refresh: a look, not a use)."""
        with self._db.session() as con:
            return con.execute("SELECT 1 FROM map_cache_entries WHERE map_key = ?", [map_key]).fetchone() is not None

    def get_map(self, map_key: str) -> Any:
        """Cached 2-D coordinates (lora_id, x, y) of a map, empty frame if absent."""
        with self._db.session() as con:
            df = con.execute("SELECT lora_id, x, y FROM map_cache WHERE map_key = ? ORDER BY lora_id", [map_key]).df()
            if len(df):
                row = con.execute("SELECT last_used FROM map_cache_entries WHERE map_key = ?", [map_key]).fetchone()
                now = self.clock()
                if row is not None and self._stale(row[0], now):
                    _touch(con, "UPDATE map_cache_entries SET last_used = ? WHERE map_key = ?", [now, map_key])
        return df

    def put_map(self, map_key: str, ids: Sequence[str], xy: np.ndarray) -> bool:
        """Replace the coordinates of a map, in one transaction, evicting the least recently
        used other maps beyond the limits. False: too large to cache, nothing written."""
        xy = np.asarray(xy, dtype=np.float64)
        if xy.shape != (len(ids), 2):
            raise InvalidInputError(f"map coordinates must be ({len(ids)}, 2), got {xy.shape}")
        nbytes = map_entry_bytes(map_key, ids)
        if nbytes > self.limits.map_max_bytes:
            log.warning("not caching map %s: %d bytes exceed the map cache's %d", map_key, nbytes, self.limits.map_max_bytes)
            return False
        rows = pd.DataFrame({"map_key": map_key, "lora_id": [str(i) for i in ids], "x": xy[:, 0], "y": xy[:, 1]})
        with self._db.transaction() as con:
            con.execute("DELETE FROM map_cache WHERE map_key = ?", [map_key])
            con.register("carlos_new_map", rows)
            try:
                con.execute("INSERT INTO map_cache (map_key, lora_id, x, y) SELECT map_key, lora_id, x, y FROM carlos_new_map")
            finally:
                con.unregister("carlos_new_map")
            con.execute(
                "INSERT INTO map_cache_entries (map_key, n_points, nbytes, last_used) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (map_key) DO UPDATE SET n_points = excluded.n_points, nbytes = excluded.nbytes, "
                "created_at = now(), last_used = excluded.last_used",
                [map_key, len(ids), nbytes, self.clock()],
            )
            evicted = self._evict(
                con, "map_cache_entries", "map_key", "map_key = ?", [map_key], self.limits.map_max_entries, self.limits.map_max_bytes
            )
            for key in evicted:
                con.execute("DELETE FROM map_cache WHERE map_key = ?", [key])
        return True

    def map_usage(self) -> CacheUsage:
        """How full the map cache is (entries are maps, not points)."""
        with self._db.session() as con:
            n, b = con.execute("SELECT count(*), coalesce(sum(nbytes), 0) FROM map_cache_entries").fetchone()
        return CacheUsage(int(n), int(b), self.limits.map_max_entries, self.limits.map_max_bytes)

    # -- eviction -----------------------------------------------------------------------------
    @staticmethod
    def _evict(con: Any, table: str, key: str, match: str, params: list[Any], max_entries: int, max_bytes: int) -> list[str]:
        """Delete the least recently used rows of ``table`` beyond the limits, never the one
        ``match`` names (the entry just written); returns the evicted entries' keys."""
        n, total = con.execute(f"SELECT count(*), coalesce(sum(nbytes), 0) FROM {table}").fetchone()
        if n <= max_entries and total <= max_bytes:
            return []
        ranked = _RANKED.format(key=key, match=match, table=table)
        gone = con.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rid FROM ({ranked}) WHERE rank > ? OR total > ?) RETURNING {key}",
            [*params, *params, max_entries, max_bytes],
        ).fetchall()
        if gone:
            log.info("evicted %d least recently used entries from %s", len(gone), table)
        return [str(g[0]) for g in gone]


def _touch(con: Any, sql: str, params: list[Any]) -> None:
    """Refresh an entry's last use, except inside a reading session (:meth:`Store.reading
    <carlos.store.store.Store.reading>`), whose snapshot cannot write: the next use outside one does."""
    if not getattr(con, "read_only", False):
        con.execute(sql, params)
