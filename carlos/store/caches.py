"""SQL for derived data kept so it is not recomputed: ``store.caches``.

Owns the vector cache (query directions and other vectors keyed by a hash of what they
depend on), the text embeddings of the textual baselines, and the 2-D map coordinates.
Everything here can be rebuilt from the LoRAs and representations, so nothing bumps
``data_version``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from carlos.errors import InvalidInputError
from carlos.store.base import Database


class CacheRepository:
    """Vector cache, text embeddings and map cache of one store (``store.caches``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- vector cache --------------------------------------------------------------------------
    def get_vector(self, kind: str, key: str) -> tuple[np.ndarray, dict] | None:
        """A cached vector (query direction, text embedding…) and its info, or None."""
        with self._db.session() as con:
            row = con.execute("SELECT vector, info FROM vector_cache WHERE kind = ? AND cache_key = ?", [kind, key]).fetchone()
        if row is None:
            return None
        return np.asarray(row[0], dtype=np.float32), json.loads(row[1] or "{}")

    def put_vector(self, kind: str, key: str, vector: np.ndarray, info: dict) -> None:
        """Cache (or replace) a vector and its info under ``(kind, key)``."""
        vec = np.asarray(vector, dtype=np.float32).ravel()
        with self._db.session() as con:
            con.execute(
                "INSERT INTO vector_cache (kind, cache_key, vector, info) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind, cache_key) DO UPDATE SET vector = excluded.vector, "
                "info = excluded.info, created_at = now()",
                [kind, key, vec.tolist(), json.dumps(info, default=str)],
            )

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
    def get_map(self, map_key: str) -> Any:
        """Cached 2-D coordinates (lora_id, x, y) of a map, empty frame if absent."""
        with self._db.session() as con:
            return con.execute("SELECT lora_id, x, y FROM map_cache WHERE map_key = ? ORDER BY lora_id", [map_key]).df()

    def put_map(self, map_key: str, ids: Sequence[str], xy: np.ndarray) -> None:
        """Replace the coordinates of a map, in one transaction."""
        xy = np.asarray(xy, dtype=np.float64)
        if xy.shape != (len(ids), 2):
            raise InvalidInputError(f"map coordinates must be ({len(ids)}, 2), got {xy.shape}")
        with self._db.transaction() as con:
            con.execute("DELETE FROM map_cache WHERE map_key = ?", [map_key])
            con.executemany(
                "INSERT INTO map_cache (map_key, lora_id, x, y) VALUES (?, ?, ?, ?)",
                [[map_key, i, float(x), float(y)] for i, (x, y) in zip(ids, xy)],
            )
