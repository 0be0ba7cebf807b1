"""SQL for review decisions (append-only audit log), claims and threshold settings:
``store.review``.

The rules of the review workflow live in :mod:`carlos.review.workflow`; this module only
reads and writes the rows. There is deliberately no method that updates or deletes a
decision. Claims and releases are logged in the same append-only table (actions
``claim`` / ``release``, status unchanged) so the audit log shows them; the status queries
and :meth:`ReviewRepository.decisions` leave them out unless asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from carlos.store.base import Database

if TYPE_CHECKING:  # only in annotations: importing the store stays free of pandas
    import pandas as pd

REVIEW_ACTIONS = ("approve", "flag", "escalate", "reopen")
#: Audit-log rows that record who held an item, not a decision on it.
CLAIM_EVENTS = ("claim", "release")
_NOT_EVENT = "action NOT IN (" + ", ".join(f"'{a}'" for a in CLAIM_EVENTS) + ")"


class ReviewRepository:
    """Decisions, claims and thresholds of one store (``store.review``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def append_decision(
        self,
        lora_id: str,
        reviewer: str,
        action: str,
        status_before: str,
        status_after: str,
        note: str | None,
    ) -> int:
        with self._db.session() as con:
            row = con.execute(
                "INSERT INTO decisions (lora_id, reviewer, action, status_before, status_after, note) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING decision_id",
                [lora_id, reviewer, action, status_before, status_after, note],
            ).fetchone()
        return int(row[0])

    def decisions(
        self, lora_id: str | None = None, reviewer: str | None = None, limit: int | None = None, *, events: bool = False
    ) -> pd.DataFrame:
        """Decisions, newest first, optionally filtered; ``events``: with the claim/release rows."""
        sql = "SELECT d.*, l.name FROM decisions d LEFT JOIN loras l USING (lora_id) WHERE 1=1"
        if not events:
            sql += f" AND d.{_NOT_EVENT}"
        params: list[Any] = []
        if lora_id is not None:
            sql += " AND d.lora_id = ?"
            params.append(lora_id)
        if reviewer is not None:
            sql += " AND d.reviewer = ?"
            params.append(reviewer)
        sql += " ORDER BY d.created_at DESC, d.decision_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._db.session() as con:
            return con.execute(sql, params).df()

    def current_statuses(self) -> pd.DataFrame:
        """lora_id, status (after its latest decision), reviewer, at, claimed_by."""
        with self._db.session() as con:
            return con.execute(
                f"""
                SELECT coalesce(d.lora_id, c.lora_id) AS lora_id, d.status_after AS status,
                       d.reviewer, d.created_at AS decided_at, d.note,
                       c.reviewer AS claimed_by, c.claimed_at
                FROM (SELECT *, row_number() OVER (PARTITION BY lora_id
                        ORDER BY created_at DESC, decision_id DESC) AS k FROM decisions WHERE {_NOT_EVENT}) d
                FULL OUTER JOIN claims c ON c.lora_id = d.lora_id
                WHERE d.k = 1 OR d.k IS NULL
                """
            ).df()

    def status_of(self, lora_id: str) -> str | None:
        with self._db.session() as con:
            row = con.execute(
                f"SELECT status_after FROM decisions WHERE lora_id = ? AND {_NOT_EVENT} ORDER BY created_at DESC, decision_id DESC LIMIT 1",
                [lora_id],
            ).fetchone()
        return row[0] if row else None

    def claim(self, lora_id: str, reviewer: str) -> str:
        """Claim an item; returns the reviewer holding it (someone else if already claimed)."""
        with self._db.session() as con:
            con.execute(
                "INSERT INTO claims (lora_id, reviewer) VALUES (?, ?) ON CONFLICT (lora_id) DO NOTHING",
                [lora_id, reviewer],
            )
            return con.execute("SELECT reviewer FROM claims WHERE lora_id = ?", [lora_id]).fetchone()[0]

    def release_claim(self, lora_id: str, reviewer: str | None = None) -> None:
        with self._db.session() as con:
            if reviewer is None:
                con.execute("DELETE FROM claims WHERE lora_id = ?", [lora_id])
            else:
                con.execute("DELETE FROM claims WHERE lora_id = ? AND reviewer = ?", [lora_id, reviewer])

    def claim_holder(self, lora_id: str) -> str | None:
        with self._db.session() as con:
            row = con.execute("SELECT reviewer FROM claims WHERE lora_id = ?", [lora_id]).fetchone()
        return row[0] if row else None

    def record_thresholds(self, strength_max: float | None, consistency_min: float | None, reviewer: str, note: str | None) -> int:
        with self._db.session() as con:
            row = con.execute(
                "INSERT INTO threshold_settings (strength_max, consistency_min, reviewer, note) VALUES (?, ?, ?, ?) RETURNING setting_id",
                [strength_max, consistency_min, reviewer, note],
            ).fetchone()
        return int(row[0])

    def threshold_history(self, limit: int | None = 50) -> pd.DataFrame:
        """Saved thresholds, newest first (``limit=None``: all of them)."""
        sql = "SELECT * FROM threshold_settings ORDER BY created_at DESC, setting_id DESC"
        with self._db.session() as con:
            return con.execute(sql + " LIMIT ?", [int(limit)]).df() if limit is not None else con.execute(sql).df()
