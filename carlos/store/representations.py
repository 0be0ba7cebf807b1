"""SQL for representations (a LoRA's direction, Strength and Consistency in one embedding space):
``store.reps``.

Owns storing them (one at a time, or in bulk from column arrays for large corpora),
reading one LoRA's, and reading a whole space: the corpus frame (metadata and values,
no vectors), the direction matrix through Arrow, and the streamed load into one
preallocated float32 array that the catalog and the scale benchmark use. Every write
bumps ``data_version``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from carlos.errors import InvalidInputError
from carlos.store.base import Database

#: Columns of ``representations`` that make up a representation's provenance.
REP_PROVENANCE = (
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


class RepresentationRepository:
    """Representations of one store (``store.reps``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- writes ----------------------------------------------------------------------------------
    def put(
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
        return self.put_many(
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

    def put_many(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Bulk form of :meth:`put`; one transaction."""
        cols = ("lora_id", "embedder", "dim", "direction", "strength", "consistency", "n_samples", *REP_PROVENANCE, "extra")
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
        with self._db.transaction() as con:
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
            self._db.bump(con)
        return [int(i) for i in ids]

    def bulk_insert(
        self,
        lora_ids: Sequence[str],
        directions: ArrayLike,
        strength: ArrayLike,
        consistency: ArrayLike,
        *,
        embedder: str,
        source: str,
        protocol: str | None = None,
        backend: str | None = None,
        names: Sequence[str] | None = None,
    ) -> int:
        """Insert new LoRAs with one representation each from column arrays, in one transaction.

        Goes through one registered Arrow table and two ``INSERT … SELECT`` statements,
        so a million rows import in seconds to minutes instead of the hours that
        :meth:`put_many` (one statement per row) would take. Meant for fresh LoRAs: ids
        already represented in ``embedder`` are refused (use :meth:`put_many` to replace
        a representation). Returns rows inserted.
        """
        import pyarrow as pa

        ids = [str(i) for i in lora_ids]
        m = np.ascontiguousarray(directions, dtype=np.float32)
        s = np.asarray(strength, dtype=np.float64).ravel()
        c = np.asarray(consistency, dtype=np.float64).ravel()
        n = len(ids)
        if m.ndim != 2 or m.shape[0] != n or m.shape[1] == 0 or s.shape != (n,) or c.shape != (n,):
            raise InvalidInputError(
                f"bulk insert needs {n} ids, an ({n}, dim) matrix and {n} strengths/consistencies; "
                f"got matrix {m.shape}, strength {s.shape}, consistency {c.shape}"
            )
        if n == 0:
            return 0
        if not (np.isfinite(m).all() and np.isfinite(s).all() and np.isfinite(c).all()):
            raise InvalidInputError("bulk insert: directions, strength and consistency must be finite")
        if len(set(ids)) != n:
            raise InvalidInputError("bulk insert: lora ids must be unique")
        names = ids if names is None else [str(x) for x in names]
        dim = int(m.shape[1])
        table = pa.table(
            {
                "lora_id": pa.array(ids, pa.string()),
                "name": pa.array(names, pa.string()),
                "direction": pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), dim),
                "strength": pa.array(s),
                "consistency": pa.array(c),
            }
        )
        view = "carlos_bulk_rows"
        with self._db.transaction() as con:
            con.register(view, table)
            try:
                clash = con.execute(
                    f"SELECT count(*) FROM representations r JOIN {view} b ON r.lora_id = b.lora_id WHERE r.embedder = ?",
                    [embedder],
                ).fetchall()[0][0]
                if clash:
                    raise InvalidInputError(
                        f"{clash} of these LoRAs already have a {embedder} representation; bulk insert is for new LoRAs only"
                    )
                con.execute(
                    f"INSERT INTO loras (lora_id, source, name) SELECT lora_id, ?, name FROM {view} ON CONFLICT (lora_id) DO NOTHING",
                    [source],
                )
                con.execute(
                    "INSERT INTO representations (lora_id, embedder, dim, direction, strength, "
                    "consistency, protocol, backend, source, extra) "
                    f"SELECT lora_id, ?, ?, CAST(direction AS FLOAT[]), strength, consistency, ?, ?, ?, "
                    f"'{{}}' FROM {view}",
                    [embedder, dim, protocol, backend, source],
                )
                self._db.bump(con)
            finally:
                con.unregister(view)
        return n

    # -- reads -----------------------------------------------------------------------------------
    def of(self, lora_id: str) -> list[StoredRepresentation]:
        """Every representation of one LoRA, newest first."""
        with self._db.session() as con:
            df = con.execute(
                "SELECT * FROM representations WHERE lora_id = ? ORDER BY created_at DESC, rep_id DESC",
                [lora_id],
            ).df()
        out = []
        for r in df.to_dict("records"):
            prov = {k: r[k] for k in REP_PROVENANCE}
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
                    n_samples=None if r["n_samples"] is None or r["n_samples"] != r["n_samples"] else int(r["n_samples"]),
                    provenance=prov,
                )
            )
        return out

    def provenance_field(self, rep_ids: Sequence[int], key: str) -> dict[int, Any]:
        """One provenance key kept in ``extra`` (e.g. ``"uncertainty"``) for many representations
        in one query: rep_id -> value; representations without it are left out."""
        if not key.isidentifier():
            raise InvalidInputError(f"provenance key must be an identifier, got {key!r}")
        ids = [int(i) for i in rep_ids]
        if not ids:
            return {}
        with self._db.session() as con:
            rows = con.execute(
                "SELECT rep_id, json_extract(extra, ?) FROM representations WHERE rep_id IN (SELECT unnest(?))",
                [f"$.{key}", ids],
            ).fetchall()
        return {int(rep_id): json.loads(value) for rep_id, value in rows if value is not None}

    def embedders(self) -> dict[str, int]:
        """Embedder id → number of LoRAs represented in that space."""
        with self._db.session() as con:
            rows = con.execute("SELECT embedder, count(DISTINCT lora_id) FROM representations GROUP BY 1 ORDER BY 2 DESC").fetchall()
        return {e: int(n) for e, n in rows}

    def corpus_frame(self, embedder: str) -> Any:
        """One row per LoRA represented in ``embedder`` space (latest representation),
        with metadata and the values, without vectors; a pandas DataFrame."""
        with self._db.session() as con:
            return con.execute(
                """
                SELECT l.lora_id, l.version_id, l.model_id,
                       coalesce(nullif(trim(l.name), ''), l.folder_name, l.lora_id) AS name,
                       l.nsfw_level, l.download_count, l.source, l.sha256, l.folder_name,
                       r.rep_id, r.strength, r.consistency, r.n_samples, r.protocol, r.backend,
                       r.prompt_set, json_extract_string(r.extra, '$.settings.noise') AS noise,
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
        with self._db.session() as con:
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

    def load_directions(
        self,
        embedder: str,
        *,
        out: np.ndarray | None = None,
        chunk_rows: int = 8_192,
        memory_limit: str | None = "128MB",
    ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """(lora ids, (n, dim) float32 directions, strength, consistency) of the latest
        representation of every LoRA in ``embedder`` space, rows aligned, in storage order.

        Streams Arrow record batches of ``chunk_rows`` into one preallocated float32 array
        (``out`` when given, which must be C-contiguous float32 of the right shape), so peak
        memory is about the matrix plus one batch. :meth:`direction_matrix` instead holds
        the whole Arrow table and a combined copy (about 2-3x the matrix) and sorts.
        DuckDB keeps every block a scan reads in its buffer pool (up to 80% of RAM by
        default), another copy of the vectors; ``memory_limit`` caps that pool for this
        read (restored afterwards; None leaves it alone): 1M x 512 loads at ~1.2x the matrix.
        """
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise InvalidInputError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
        latest = (
            "SELECT rep_id FROM (SELECT rep_id, row_number() OVER (PARTITION BY lora_id "
            "ORDER BY created_at DESC, rep_id DESC) AS k FROM representations WHERE embedder = ?) "
            "WHERE k = 1"
        )
        with self._db.session() as con, _memory_limit(con, memory_limit):
            n, dmin, dmax = con.execute(
                f"SELECT count(*), min(dim), max(dim) FROM representations WHERE embedder = ? AND rep_id IN ({latest})",
                [embedder, embedder],
            ).fetchall()[0]
            n = int(n)
            if n == 0:
                return [], np.zeros((0, 0), dtype=np.float32), np.zeros(0), np.zeros(0)
            if dmin != dmax:
                raise InvalidInputError(f"{embedder} holds directions of sizes {dmin} and {dmax}")
            dim = int(dmax)
            if out is None:
                out = np.empty((n, dim), dtype=np.float32)
            elif out.dtype != np.float32 or out.shape != (n, dim) or not out.flags.c_contiguous:
                raise InvalidInputError(f"out must be a C-contiguous float32 array of shape {(n, dim)}")
            strength = np.empty(n, dtype=np.float64)
            consistency = np.empty(n, dtype=np.float64)
            ids: list[str] = []
            reader = con.sql(
                f"SELECT lora_id, strength, consistency, direction FROM representations WHERE embedder = ? AND rep_id IN ({latest})",
                params=[embedder, embedder],
            ).to_arrow_reader(chunk_rows)
            pos = 0
            for batch in reader:
                k = batch.num_rows
                if pos + k > n:
                    raise InvalidInputError(f"{embedder} changed while it was being read; retry")
                flat = batch.column(3).flatten().to_numpy(zero_copy_only=False)
                out[pos : pos + k] = flat.reshape(k, dim)
                strength[pos : pos + k] = batch.column(1).to_numpy(zero_copy_only=False)
                consistency[pos : pos + k] = batch.column(2).to_numpy(zero_copy_only=False)
                ids.extend(batch.column(0).to_pylist())
                pos += k
        if pos != n:
            raise InvalidInputError(f"{embedder} changed while it was being read; retry")
        return ids, out, strength, consistency


@contextlib.contextmanager
def _memory_limit(con: Any, limit: str | None) -> Iterator[None]:
    """Temporarily cap DuckDB's memory (buffer pool) on this connection's database (PostgreSQL's
    server manages its own)."""
    if limit is None or con.dialect != "duckdb":
        yield
        return
    before = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    con.execute("SET memory_limit = ?", [limit])
    try:
        yield
    finally:
        con.execute("SET memory_limit = ?", [before])
