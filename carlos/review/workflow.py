"""Review workflow: claims, decisions (append-only), thresholds, queue, exports (who may write: :mod:`carlos.review.access`).

A reviewer claims an item before deciding, so two reviewers never act on the
same LoRA unknowingly; every decision records who, when, and status before →
after. Thresholds set by reviewers are kept with who set them and when.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
import pandas as pd

from carlos.config import Thresholds
from carlos.core.view import CorpusView
from carlos.errors import InvalidInputError, PermissionDeniedError
from carlos.store.store import Store

STATUSES = ("unreviewed", "approved", "flagged", "escalated")
ACTIONS = {"approve": "approved", "flag": "flagged", "escalate": "escalated", "reopen": "unreviewed"}
OPEN_STATUSES = ("flagged", "escalated")
MAX_NOTE = 4000


def _check_reviewer(reviewer: str) -> str:
    if not reviewer or not reviewer.strip():
        raise InvalidInputError("a decision needs a reviewer name")
    return reviewer.strip()


def _resolved(store: Store, key: str) -> str:
    """The lora_id of any of a LoRA's names (lora_id, Civitai version id, sha256); raises NotFoundError."""
    return store.loras.resolve(key)


def status_of(store: Store, lora_id: str) -> str:
    """The review status of a LoRA named by any of its names."""
    return store.review.status_of(_resolved(store, lora_id)) or "unreviewed"


def claim_holder(store: Store, lora_id: str) -> str | None:
    """Who holds the claim on this LoRA, or None."""
    return store.review.claim_holder(_resolved(store, lora_id))


def history(store: Store, lora_id: str | None = None, *, limit: int | None = None) -> pd.DataFrame:
    """Decisions, newest first: of one LoRA, or the whole audit log."""
    return store.review.decisions(None if lora_id is None else _resolved(store, lora_id), limit=limit)


def threshold_history(store: Store, *, limit: int = 50) -> pd.DataFrame:
    """Saved thresholds with who saved them and when, newest first."""
    return store.review.threshold_history(limit=limit)


def claim(store: Store, lora_id: str, reviewer: str) -> None:
    """Claim an item or raise PermissionDeniedError naming who holds it."""
    reviewer = _check_reviewer(reviewer)
    lora_id = _resolved(store, lora_id)
    holder = store.review.claim(lora_id, reviewer)
    if holder != reviewer:
        raise PermissionDeniedError(f"{lora_id} is claimed by {holder}; ask them or wait for release")


def release(store: Store, lora_id: str, reviewer: str) -> None:
    """Release ``reviewer``'s claim on a LoRA named by any of its names."""
    reviewer = _check_reviewer(reviewer)
    store.review.release_claim(_resolved(store, lora_id), reviewer)


def decide(
    store: Store,
    lora_id: str,
    reviewer: str,
    action: str,
    note: str | None = None,
    *,
    require_claim: bool = True,
) -> int:
    """Record a decision; the item must be claimed by ``reviewer`` (or unclaimed when
    ``require_claim`` is False). Returns the decision id; the claim is released."""
    reviewer = _check_reviewer(reviewer)
    if action not in ACTIONS:
        raise InvalidInputError(f"unknown action {action!r}; choose one of {', '.join(ACTIONS)}")
    if note is not None and len(note) > MAX_NOTE:
        raise InvalidInputError(f"note is {len(note)} characters; keep it under {MAX_NOTE}")
    lora_id = _resolved(store, lora_id)
    with store.transaction():
        holder = store.review.claim_holder(lora_id)
        if holder is not None and holder != reviewer:
            raise PermissionDeniedError(f"{lora_id} is claimed by {holder}; they must release it first")
        if require_claim and holder is None:
            raise PermissionDeniedError(f"claim {lora_id} before deciding on it")
        before = store.review.status_of(lora_id) or "unreviewed"
        decision = store.review.append_decision(lora_id, reviewer, action, before, ACTIONS[action], note)
        store.review.release_claim(lora_id)
    return decision


def bulk_flag(store: Store, lora_ids: Iterable[str], reviewer: str, note: str | None = None) -> dict:
    """Flag many LoRAs (e.g. a scatter selection), named by any of their names; items
    claimed by others are skipped. Results are reported by lora_id."""
    reviewer = _check_reviewer(reviewer)
    done, skipped = [], []
    for lid in dict.fromkeys(_resolved(store, k) for k in lora_ids):
        holder = store.review.claim_holder(lid)
        if holder not in (None, reviewer):
            skipped.append((lid, f"claimed by {holder}"))
            continue
        if (store.review.status_of(lid) or "unreviewed") == "flagged":
            skipped.append((lid, "already flagged"))
            continue
        decide(store, lid, reviewer, "flag", note, require_claim=False)
        done.append(lid)
    return {"flagged": done, "skipped": skipped}


def current_thresholds(store: Store) -> Thresholds:
    """The latest reviewer-set thresholds, else the paper's."""
    hist = store.review.threshold_history(limit=1)
    if hist.empty:
        return Thresholds()
    row = hist.iloc[0]
    as_opt = lambda v: None if pd.isna(v) else float(v)  # noqa: E731
    return Thresholds(as_opt(row["strength_max"]), as_opt(row["consistency_min"]))


def set_thresholds(store: Store, thresholds: Thresholds, reviewer: str, note: str | None = None) -> int:
    return store.review.record_thresholds(thresholds.strength_max, thresholds.consistency_min, _check_reviewer(reviewer), note)


def status_frame(store: Store, view: CorpusView) -> pd.DataFrame:
    """Per LoRA of ``view``: status, last reviewer/time/note and claim holder."""
    st = store.review.current_statuses()
    df = view.frame[["lora_id", "name", "strength", "consistency", "sha256"]].merge(st, on="lora_id", how="left")
    df["status"] = df["status"].fillna("unreviewed")
    return df


def review_queue(
    store: Store,
    view: CorpusView,
    *,
    statuses: Iterable[str] = OPEN_STATUSES,
    near_duplicate_cos: float = 0.95,
) -> pd.DataFrame:
    """Items with the given statuses, each with its re-uploads (same sha256) and
    near-duplicates (direction cosine ≥ ``near_duplicate_cos``) grouped in."""
    statuses = tuple(statuses)
    bad = set(statuses) - set(STATUSES)
    if bad:
        raise InvalidInputError(f"unknown statuses {sorted(bad)}; valid: {', '.join(STATUSES)}")
    df = status_frame(store, view)
    queue = df[df["status"].isin(statuses)].copy()
    if queue.empty:
        queue["same_file"] = pd.Series(dtype=object)
        queue["near_duplicates"] = pd.Series(dtype=object)
        return queue
    rows = np.array([view.row_of(lid) for lid in queue["lora_id"]])
    m = view.matrix / np.maximum(np.linalg.norm(view.matrix, axis=1, keepdims=True), 1e-12)
    sims = m[rows] @ m.T
    ids = np.array(view.ids)
    near = []
    for k, r in enumerate(rows):
        hits = np.flatnonzero(sims[k] >= near_duplicate_cos)
        near.append([ids[h] for h in hits if h != r])
    queue["near_duplicates"] = near
    sha_groups = df.dropna(subset=["sha256"]).groupby("sha256")["lora_id"].apply(list)
    queue["same_file"] = [
        [x for x in sha_groups.get(s, []) if x != lid] if isinstance(s, str) else [] for s, lid in zip(queue["sha256"], queue["lora_id"])
    ]
    return queue.sort_values("decided_at", ascending=False)


def export_audit_log(store: Store, fmt: str) -> bytes:
    """The whole audit log as CSV or Parquet bytes."""
    log = store.review.decisions()
    if fmt == "csv":
        return log.to_csv(index=False).encode("utf-8")
    if fmt == "parquet":
        buf = io.BytesIO()
        log.to_parquet(buf, index=False)
        return buf.getvalue()
    raise InvalidInputError(f"unknown export format {fmt!r}; choose csv or parquet")
