"""SQL for characterization jobs, their per-pair results, the base-image cache and the
thumbnails: ``store.jobs``.

Owns the job queue (enqueue, claim, heartbeat, status, cancel), the per-pair CLIP-diffs
a job produces, an adaptive job's decision after each round (``job_rounds``), the
base-image embeddings shared by every LoRA, and the image pairs the dashboard shows.
Pair results are keyed by ``(job_id, pair_index)`` and inserted with ``ON CONFLICT DO
NOTHING``, so a worker that is killed and restarted never counts a pair twice. Nothing
here bumps ``data_version`` (a job's result is a representation, written through
``store.reps``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from carlos.store.base import Database

if TYPE_CHECKING:  # only in annotations: importing the store stays free of pandas
    import pandas as pd

JOB_STATES = ("queued", "running", "finished", "failed", "cancelled")


class JobRepository:
    """Jobs, pair results, base-image cache and thumbnails of one store (``store.jobs``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def enqueue(
        self,
        lora_id: str,
        file_path: str,
        backend: str,
        protocol: str,
        total: int,
        options: dict[str, Any],
        requested_by: str | None,
    ) -> int:
        with self._db.session() as con:
            row = con.execute(
                "INSERT INTO jobs (lora_id, file_path, backend, protocol, total, options, requested_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING job_id",
                [lora_id, file_path, backend, protocol, total, json.dumps(options), requested_by],
            ).fetchone()
        return int(row[0])

    def get(self, job_id: int) -> dict[str, Any] | None:
        with self._db.session() as con:
            df = con.execute("SELECT * FROM jobs WHERE job_id = ?", [int(job_id)]).df()
        if df.empty:
            return None
        job = df.iloc[0].to_dict()
        job["options"] = json.loads(job["options"] or "{}")
        return job

    def recent(self, status: str | None = None, limit: int = 100) -> pd.DataFrame:
        sql = "SELECT * FROM jobs"
        params: list[Any] = []
        if status is not None:
            sql += " WHERE status = ?"
            params.append(status)
        sql += " ORDER BY job_id DESC LIMIT ?"
        params.append(int(limit))
        with self._db.session() as con:
            return con.execute(sql, params).df()

    def lora_ids(self) -> frozenset[str]:
        """Every LoRA that has a job, in any state (a detail page of any other reads nothing a worker writes)."""
        with self._db.session() as con:
            return frozenset(r[0] for r in con.execute("SELECT DISTINCT lora_id FROM jobs").fetchall())

    def live_of(self, lora_id: str, backend: str, protocol: str) -> list[tuple[int, str | None]]:
        """(job_id, options JSON) of the queued, running or finished jobs of one LoRA/backend/protocol."""
        with self._db.session() as con:
            return con.execute(
                "SELECT job_id, options FROM jobs WHERE lora_id = ? AND backend = ? AND protocol = ? "
                "AND status IN ('queued', 'running', 'finished') ORDER BY job_id",
                [lora_id, backend, protocol],
            ).fetchall()

    def claim_next(self, worker: str, stale_after_s: float, job_id: int | None = None) -> dict[str, Any] | None:
        """Atomically take the oldest queued job (or ``job_id``), or a running one whose
        worker went silent for ``stale_after_s``, or ``job_id`` when it is this worker's own
        running job (resumed after the store was unreachable)."""
        with self._db.transaction() as con:
            row = con.execute(
                "SELECT job_id FROM jobs WHERE (status = 'queued' OR (status = 'running' AND "
                "(heartbeat < now() - to_seconds(?) OR (worker = ? AND job_id = ?)))) "
                "AND (CAST(? AS BIGINT) IS NULL OR job_id = ?) ORDER BY job_id LIMIT 1",
                [float(stale_after_s), worker, job_id, job_id, job_id],
            ).fetchone()
            if row is None:
                return None
            con.execute(
                "UPDATE jobs SET status = 'running', worker = ?, heartbeat = now(), "
                "started_at = coalesce(started_at, now()) WHERE job_id = ?",
                [worker, row[0]],
            )
        return self.get(row[0])

    def heartbeat(self, job_id: int, worker: str) -> str:
        """Refresh the heartbeat; returns the job's status (a 'cancelled' job must stop)."""
        with self._db.session() as con:
            con.execute(
                "UPDATE jobs SET heartbeat = now() WHERE job_id = ? AND worker = ? AND status = 'running'",
                [int(job_id), worker],
            )
            return con.execute("SELECT status FROM jobs WHERE job_id = ?", [int(job_id)]).fetchone()[0]

    def set_status(self, job_id: int, status: str, error: str | None = None) -> None:
        finished = status in ("finished", "failed", "cancelled")
        with self._db.session() as con:
            con.execute(
                "UPDATE jobs SET status = ?, error = ?, finished_at = CASE WHEN ? THEN now() ELSE finished_at END WHERE job_id = ?",
                [status, error, finished, int(job_id)],
            )

    def cancel(self, job_id: int) -> bool:
        with self._db.session() as con:
            row = con.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE job_id = ? "
                "AND status IN ('queued', 'running') RETURNING job_id",
                [int(job_id)],
            ).fetchone()
        return row is not None

    def add_pair_results(self, job_id: int, rows: Sequence[dict[str, Any]]) -> int:
        """Insert per-pair diffs (ignoring pairs already stored) and update ``done``."""
        with self._db.transaction() as con:
            con.executemany(
                "INSERT INTO pair_results (job_id, pair_index, prompt, category, seed, diff) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [
                    [
                        int(job_id),
                        int(r["pair_index"]),
                        r["prompt"],
                        r.get("category"),
                        int(r["seed"]),
                        np.asarray(r["diff"], dtype=np.float32).tolist(),
                    ]
                    for r in rows
                ],
            )
            done = con.execute("SELECT count(*) FROM pair_results WHERE job_id = ?", [int(job_id)]).fetchone()[0]
            con.execute("UPDATE jobs SET done = ?, heartbeat = now() WHERE job_id = ?", [done, job_id])
        return int(done)

    def done_pairs(self, job_id: int) -> set[int]:
        with self._db.session() as con:
            rows = con.execute("SELECT pair_index FROM pair_results WHERE job_id = ?", [int(job_id)]).fetchall()
        return {int(r[0]) for r in rows}

    def pair_diffs(self, job_id: int) -> tuple[pd.DataFrame, np.ndarray]:
        """(pair metadata ordered by pair_index, float32 (n, d) diffs)."""
        with self._db.session() as con:
            df = con.execute(
                "SELECT pair_index, prompt, category, seed, diff FROM pair_results WHERE job_id = ? ORDER BY pair_index",
                [int(job_id)],
            ).df()
        diffs = np.array(df.pop("diff").tolist(), dtype=np.float32) if len(df) else np.zeros((0, 0))
        return df, diffs

    def put_round(self, job_id: int, round_index: int, n: int, decision: dict[str, Any]) -> None:
        """Record an adaptive job's decision after round ``round_index`` (a resumed job that
        decides a round again overwrites it with the same decision)."""
        with self._db.session() as con:
            con.execute(
                "INSERT INTO job_rounds (job_id, round_index, n, decision) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (job_id, round_index) DO UPDATE SET n = excluded.n, decision = excluded.decision, decided_at = now()",
                [int(job_id), int(round_index), int(n), json.dumps(decision, allow_nan=False)],
            )

    def rounds(self, job_id: int) -> list[dict[str, Any]]:
        """The job's recorded round decisions, in order: ``{"round_index", "n", "decision"}``."""
        with self._db.session() as con:
            rows = con.execute(
                "SELECT round_index, n, decision FROM job_rounds WHERE job_id = ? ORDER BY round_index", [int(job_id)]
            ).fetchall()
        return [{"round_index": int(r), "n": int(n), "decision": json.loads(d)} for r, n, d in rows]

    def base_embeddings(self, base_key: str, keys: Sequence[tuple[str, int]]) -> dict:
        """{(prompt, seed): embedding} for those cached under ``base_key``."""
        if not keys:
            return {}
        with self._db.session() as con:
            df = con.execute("SELECT prompt, seed, embedding FROM base_cache WHERE base_key = ?", [base_key]).df()
        wanted = set(keys)
        return {
            (p, int(s)): np.asarray(e, dtype=np.float32)
            for p, s, e in zip(df["prompt"], df["seed"], df["embedding"])
            if (p, int(s)) in wanted
        }

    def put_base_embeddings(self, base_key: str, rows: Sequence[tuple[str, int, np.ndarray, bytes | None]]) -> None:
        with self._db.session() as con:
            con.executemany(
                "INSERT INTO base_cache (base_key, prompt, seed, embedding, thumbnail) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [[base_key, p, int(s), np.asarray(e, dtype=np.float32).tolist(), t] for p, s, e, t in rows],
            )

    def base_thumbnail(self, base_key: str, prompt: str, seed: int) -> bytes | None:
        with self._db.session() as con:
            row = con.execute(
                "SELECT thumbnail FROM base_cache WHERE base_key = ? AND prompt = ? AND seed = ?",
                [base_key, prompt, int(seed)],
            ).fetchone()
        return None if row is None else row[0]

    def put_thumbnails(self, job_id: int, rows: Sequence[tuple[int, bytes | None, bytes | None]]) -> None:
        with self._db.session() as con:
            con.executemany(
                "INSERT INTO thumbnails (job_id, pair_index, base_png, lora_png) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [[int(job_id), int(i), base, lora] for i, base, lora in rows],
            )

    def thumbnails(self, job_id: int) -> pd.DataFrame:
        with self._db.session() as con:
            return con.execute(
                "SELECT t.pair_index, p.prompt, p.seed, t.base_png, t.lora_png FROM thumbnails t "
                "LEFT JOIN pair_results p USING (job_id, pair_index) WHERE t.job_id = ? "
                "ORDER BY t.pair_index",
                [int(job_id)],
            ).df()

    # -- characterization details for the dashboard --------------------------------------------
    def pair_results_of(self, lora_id: str, job_id: int | None = None) -> Any:
        """Per-pair results of one LoRA's local characterization: job_id, pair_index, prompt,
        category, seed and ``norm`` (L2 norm of the pair's CLIP-diff, whose mean is Strength).
        From ``job_id`` or else the LoRA's latest job with results; an empty frame for corpus
        LoRAs (characterized by the authors, no per-pair data)."""
        with self._db.session() as con:
            return con.execute(
                """
                SELECT p.job_id, p.pair_index, p.prompt, p.category, p.seed,
                       sqrt(list_dot_product(p.diff, p.diff)) AS norm
                FROM pair_results p JOIN jobs j ON j.job_id = p.job_id
                WHERE j.lora_id = ? AND p.job_id = coalesce(?, (
                    SELECT max(p2.job_id) FROM pair_results p2 JOIN jobs j2 ON j2.job_id = p2.job_id
                    WHERE j2.lora_id = ?))
                ORDER BY p.pair_index
                """,
                [lora_id, job_id, lora_id],
            ).df()

    def thumbnails_of(self, lora_id: str, job_id: int | None = None, limit: int = 24) -> Any:
        """Base/LoRA image pairs (PNG bytes) of one LoRA: job_id, pair_index, prompt, category,
        seed, base_png, lora_png; from ``job_id`` or the latest job with thumbnails, at most
        ``limit`` rows; empty for corpus LoRAs."""
        with self._db.session() as con:
            return con.execute(
                """
                SELECT t.job_id, t.pair_index, p.prompt, p.category, p.seed, t.base_png, t.lora_png
                FROM thumbnails t JOIN jobs j ON j.job_id = t.job_id
                LEFT JOIN pair_results p ON p.job_id = t.job_id AND p.pair_index = t.pair_index
                WHERE j.lora_id = ? AND t.job_id = coalesce(?, (
                    SELECT max(t2.job_id) FROM thumbnails t2 JOIN jobs j2 ON j2.job_id = t2.job_id
                    WHERE j2.lora_id = ?))
                ORDER BY t.pair_index LIMIT ?
                """,
                [lora_id, job_id, lora_id, int(limit)],
            ).df()
