"""SQL for large corpora: bulk import and streamed loading of direction matrices.

Mixed into :class:`carlos.store.store.Store` (used by the catalog and the scale benchmark).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from carlos.errors import InvalidInputError


class BulkSQL:
    """Bulk statements; ``self.session()`` / ``transaction()`` / ``_bump`` come from Store."""

    # -- bulk paths for large corpora (benchmarks, bulk imports; added for issue 6) -------------
    def bulk_insert_representations(
        self,
        lora_ids: Sequence[str],
        directions: np.ndarray,
        strength: np.ndarray,
        consistency: np.ndarray,
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
        :meth:`put_representations` (one statement per row) would take. Meant for fresh
        LoRAs: ids already represented in ``embedder`` are refused (use
        :meth:`put_representations` to replace a representation). Returns rows inserted.
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
        with self.transaction() as con:
            con.execute("SET enable_progress_bar = false")  # DuckDB would draw it on stdout (--json)
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
                self._bump(con)
            finally:
                con.unregister(view)
        return n

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
        with self.session() as con, self._memory_limit(con, memory_limit):
            con.execute("SET enable_progress_bar = false")  # DuckDB would draw it on stdout (--json)
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
    def _memory_limit(self, con: Any, limit: str | None) -> Iterator[None]:
        """Temporarily cap DuckDB's memory (buffer pool) on this connection's database."""
        if limit is None:
            yield
            return
        before = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        con.execute("SET memory_limit = ?", [limit])
        try:
            yield
        finally:
            con.execute("SET memory_limit = ?", [before])
