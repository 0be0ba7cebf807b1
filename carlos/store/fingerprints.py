"""SQL for weight fingerprints and the weight-space matches found between them: ``store.fingerprints``.

A fingerprint (:mod:`carlos.weights.sketch`) is stored per LoRA id (``sha256:<hex>`` for an
upload or a fingerprinted file): its search vector as ``FLOAT[]`` with a ``dim`` CHECK, the
canonical module names with their exact norms, the module sketches as little-endian float32
bytes, the statistics as JSON and the code version that made it. A match row says how one LoRA's
weights relate to another's (label, cosine, relative scale, details as JSON); each pair is
written from both sides. Writing either bumps ``data_version``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from carlos.errors import InvalidInputError
from carlos.store.base import Database

FINGERPRINT_COLUMNS = (
    "lora_id",
    "sha256",
    "file_name",
    "file_path",
    "format",
    "spec",
    "dim",
    "vector",
    "norm",
    "module_names",
    "module_norms",
    "module_sketches",
    "stats",
    "code_version",
)
MATCH_COLUMNS = ("lora_id", "other_id", "label", "kind", "cosine", "scale", "exact", "detail")


class FingerprintRepository:
    """Weight fingerprints and weight-space matches of one store (``store.fingerprints``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def put(self, row: dict[str, Any]) -> None:
        """Insert, or replace, the fingerprint of ``row["lora_id"]`` (arrays as numpy, stats as a dict); the first ``created_at`` stays."""
        unknown = set(row) - set(FINGERPRINT_COLUMNS)
        if unknown or not row.get("lora_id"):
            raise InvalidInputError(f"a fingerprint row needs a lora_id and only the columns {FINGERPRINT_COLUMNS}; got {sorted(unknown)}")
        vector = np.asarray(row["vector"], dtype=np.float32).ravel()
        sketches = np.ascontiguousarray(row["module_sketches"], dtype="<f4")
        names = list(row["module_names"])
        norms = np.asarray(row["module_norms"], dtype=np.float32).ravel()
        if not (len(names) == len(norms) == (sketches.shape[0] if sketches.ndim == 2 else -1)):
            raise InvalidInputError("module names, norms and sketches must have one row per module")
        values = dict(row)
        values.update(
            dim=len(vector),
            vector=vector.tolist(),
            module_names=names,
            module_norms=norms.tolist(),
            module_sketches=sketches.tobytes(),
            stats=json.dumps(row.get("stats") or {}),
        )
        cols = FINGERPRINT_COLUMNS
        with self._db.transaction() as con:
            updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "lora_id")
            con.execute(  # a re-fingerprint keeps created_at: when the LoRA was first seen
                f"INSERT INTO weight_fingerprints ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                f"ON CONFLICT (lora_id) DO UPDATE SET {updates}",
                [values.get(c) for c in cols],
            )
            self._db.bump(con)

    def get(self, lora_id: str) -> dict[str, Any] | None:
        """The stored fingerprint, arrays decoded (``vector``, ``module_norms``, ``module_sketches``), or None."""
        return self.get_many([lora_id]).get(lora_id)

    def get_many(self, lora_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """lora_id -> decoded fingerprint (see :meth:`get`) of those of ``lora_ids`` that are stored, in one query."""
        if not lora_ids:
            return {}
        with self._db.session() as con:
            cur = con.execute("SELECT * FROM weight_fingerprints WHERE lora_id IN (SELECT unnest(CAST(? AS VARCHAR[])))", [list(lora_ids)])
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        out = {}
        for row in rows:
            n = len(row["module_names"])
            row["vector"] = np.asarray(row["vector"], dtype=np.float32)
            row["module_norms"] = np.asarray(row["module_norms"], dtype=np.float32)
            row["module_sketches"] = np.frombuffer(row["module_sketches"], dtype="<f4").reshape(n, -1).astype(np.float32)
            row["stats"] = json.loads(row["stats"]) if row.get("stats") else {}
            out[str(row["lora_id"])] = row
        return out

    def find_by_sha256(self, sha256: str) -> str | None:
        """The id of the fingerprint of the file with this sha256, or None."""
        with self._db.session() as con:
            row = con.execute("SELECT lora_id FROM weight_fingerprints WHERE sha256 = ? ORDER BY lora_id LIMIT 1", [sha256]).fetchone()
        return str(row[0]) if row else None

    def count(self, spec: str | None = None) -> int:
        with self._db.session() as con:
            if spec is None:
                row = con.execute("SELECT count(*) FROM weight_fingerprints").fetchone()
            else:
                row = con.execute("SELECT count(*) FROM weight_fingerprints WHERE spec = ?", [spec]).fetchone()
        return int(row[0])

    def vectors(self, spec: str) -> tuple[list[str], np.ndarray]:
        """(ids, float32 (n, dim) search vectors) of every fingerprint made with ``spec``, via Arrow."""
        with self._db.session() as con:
            table = con.sql(
                "SELECT lora_id, vector FROM weight_fingerprints WHERE spec = ? ORDER BY lora_id", params=[spec]
            ).to_arrow_table()
        ids = [str(x) for x in table.column("lora_id").to_pylist()]
        if not ids:
            return [], np.zeros((0, 0), dtype=np.float32)
        flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return ids, np.ascontiguousarray(flat.astype(np.float32, copy=False).reshape(len(ids), -1))

    def files(self, lora_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """lora_id -> {file_path, file_name, sha256} for these fingerprints."""
        if not lora_ids:
            return {}
        with self._db.session() as con:
            rows = con.execute(
                "SELECT lora_id, file_path, file_name, sha256 FROM weight_fingerprints "
                "WHERE lora_id IN (SELECT unnest(CAST(? AS VARCHAR[])))",
                [list(lora_ids)],
            ).fetchall()
        return {str(r[0]): {"file_path": r[1], "file_name": r[2], "sha256": r[3]} for r in rows}

    # -- matches ------------------------------------------------------------------------------
    def put_matches(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert or replace match rows (``detail`` as a dict); returns how many were written."""
        if not rows:
            return 0
        values = []
        for r in rows:
            if not r.get("lora_id") or not r.get("other_id") or r["lora_id"] == r["other_id"]:
                raise InvalidInputError("a match row needs two different ids, lora_id and other_id")
            values.append([json.dumps(r.get("detail") or {}) if c == "detail" else r.get(c) for c in MATCH_COLUMNS])
        with self._db.transaction() as con:
            con.executemany(
                f"INSERT INTO weight_matches ({', '.join(MATCH_COLUMNS)}) VALUES ({', '.join('?' * len(MATCH_COLUMNS))}) "
                "ON CONFLICT (lora_id, other_id) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in MATCH_COLUMNS if c not in ("lora_id", "other_id")),
                values,
            )
            self._db.bump(con)
        return len(values)

    def matches(self, lora_id: str | None = None, labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Match rows (of one LoRA, or all), strongest first, with both sides' names and file names."""
        sql = (
            "SELECT m.*, m.created_at AS matched_at, la.name AS name, lb.name AS other_name, "
            "fa.file_name AS file_name, fb.file_name AS other_file_name, fa.created_at AS fingerprinted_at, "
            "fb.created_at AS other_fingerprinted_at "
            "FROM weight_matches m LEFT JOIN loras la ON la.lora_id = m.lora_id LEFT JOIN loras lb ON lb.lora_id = m.other_id "
            "LEFT JOIN weight_fingerprints fa ON fa.lora_id = m.lora_id LEFT JOIN weight_fingerprints fb ON fb.lora_id = m.other_id "
            "WHERE 1=1"
        )
        params: list[Any] = []
        if lora_id is not None:
            sql += " AND m.lora_id = ?"
            params.append(lora_id)
        if labels is not None:
            sql += " AND m.label IN (SELECT unnest(CAST(? AS VARCHAR[])))"
            params.append(list(labels))
        sql += " ORDER BY abs(m.cosine) DESC, m.other_id"
        with self._db.session() as con:
            cur = con.execute(sql, params)
            cols = [d[0] for d in cur.description]
            out = [dict(zip(cols, r)) for r in cur.fetchall()]
        for r in out:
            r["detail"] = json.loads(r["detail"]) if r.get("detail") else {}
        return out
