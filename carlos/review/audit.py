"""The audit log as one timeline: decisions, claims and releases, and threshold changes, newest
first, for ``python -m carlos review log|export`` (JSON-ready records, CSV, JSON, Parquet).

Decisions, claims and releases are rows of the append-only decisions table (claims and
releases leave the status unchanged); saved thresholds come from their own history. Nothing
here writes.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pandas as pd

from carlos.core.untrusted import csv_bytes
from carlos.errors import InvalidInputError
from carlos.store.review import CLAIM_EVENTS
from carlos.store.store import Store

#: Columns of :func:`audit_log`, in order.
COLUMNS = [
    "at",
    "event",
    "reviewer",
    "lora_id",
    "name",
    "action",
    "status_before",
    "status_after",
    "note",
    "strength_max",
    "consistency_min",
    "id",
]
EXPORT_FORMATS = ("csv", "json", "parquet")


def audit_log(store: Store, lora_id: str | None = None, *, limit: int | None = None) -> pd.DataFrame:
    """Every review event, newest first: ``event`` is ``decision``, ``claim``, ``release`` or
    ``thresholds``. ``lora_id`` (any of a LoRA's names): that LoRA's events only (thresholds
    are not about one LoRA)."""
    key = None if lora_id is None else store.loras.resolve(lora_id)
    dec = store.review.decisions(key, events=True)
    parts = []
    if len(dec):
        parts.append(
            pd.DataFrame(
                {
                    "at": dec["created_at"],
                    "event": [a if a in CLAIM_EVENTS else "decision" for a in dec["action"]],
                    "reviewer": dec["reviewer"],
                    "lora_id": dec["lora_id"],
                    "name": dec["name"],
                    "action": dec["action"],
                    "status_before": dec["status_before"],
                    "status_after": dec["status_after"],
                    "note": dec["note"],
                    "id": dec["decision_id"],
                }
            )
        )
    thr = store.review.threshold_history(limit=None) if key is None else pd.DataFrame()
    if len(thr):
        parts.append(
            pd.DataFrame(
                {
                    "at": thr["created_at"],
                    "event": "thresholds",
                    "reviewer": thr["reviewer"],
                    "action": "set thresholds",
                    "note": thr["note"],
                    "strength_max": thr["strength_max"],
                    "consistency_min": thr["consistency_min"],
                    "id": thr["setting_id"],
                }
            )
        )
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    log = pd.concat(parts, ignore_index=True).reindex(columns=COLUMNS)
    log = log.sort_values(["at", "id"], ascending=False, kind="stable").reset_index(drop=True)
    return log if limit is None else log.head(int(limit))


def audit_records(store: Store, lora_id: str | None = None, *, limit: int | None = None) -> list[dict[str, Any]]:
    """:func:`audit_log` as JSON-ready dicts: ISO timestamps, ``None`` for missing values."""
    return [{k: _plain(v) for k, v in row.items()} for row in audit_log(store, lora_id, limit=limit).to_dict("records")]


def _plain(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT:
        return None
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if hasattr(v, "item"):  # numpy scalars
        return _plain(v.item())
    return v


def export_audit(store: Store, fmt: str) -> bytes:
    """The whole audit log as CSV (formula prefixes neutralized), JSON or Parquet bytes."""
    if fmt not in EXPORT_FORMATS:
        raise InvalidInputError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "json":
        return json.dumps(audit_records(store), indent=2, ensure_ascii=False).encode("utf-8")
    log = audit_log(store)
    if fmt == "csv":
        return csv_bytes(log)
    buf = io.BytesIO()
    log.to_parquet(buf, index=False)
    return buf.getvalue()
