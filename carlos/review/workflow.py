"""Review workflow: claims, decisions (append-only), thresholds, queue, exports (who may write: :mod:`carlos.review.access`).

A reviewer claims an item before deciding, so two reviewers never act on the
same LoRA unknowingly; every decision records who, when, and status before →
after. Thresholds set by reviewers are kept with who set them and when. Every
write takes the acting :class:`CurrentUser` and checks the access policy
(:func:`~carlos.core.access.authorize`) before it touches the store: a user who is
not a listed reviewer, or not logged in, gets ``PermissionDeniedError`` and nothing is written.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import pandas as pd

from carlos.config import Thresholds
from carlos.core.access import AccessPolicy, CurrentUser, authorize, resolve_policy
from carlos.core.untrusted import csv_bytes
from carlos.core.view import CorpusView
from carlos.errors import InvalidInputError, PermissionDeniedError
from carlos.review.duplicates import with_duplicates
from carlos.store.store import Store

STATUSES = ("unreviewed", "approved", "flagged", "escalated")
ACTIONS = {"approve": "approved", "flag": "flagged", "escalate": "escalated", "reopen": "unreviewed"}
OPEN_STATUSES = ("flagged", "escalated")
MAX_NOTE = 4000


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


def claim(store: Store, lora_id: str, user: CurrentUser, *, policy: AccessPolicy | None = None) -> None:
    """Claim an item (logged in the audit log) or raise PermissionDeniedError: the user may
    not write, or someone else holds it (named)."""
    reviewer = authorize(user, f"claim {lora_id}", policy)
    lora_id = _resolved(store, lora_id)
    with store.transaction():
        holder = store.review.claim(lora_id, reviewer)
        if holder != reviewer:
            raise PermissionDeniedError(f"{lora_id} is claimed by {holder}; ask them or wait for release")
        _log_event(store, lora_id, reviewer, "claim", None)


def release(store: Store, lora_id: str, user: CurrentUser, *, force: bool = False, policy: AccessPolicy | None = None) -> bool:
    """Release the user's claim on a LoRA named by any of its names; False if nobody held it.

    Only the holder may release a claim; ``force``: a reviewer releases someone else's (a
    reviewer who left), recorded in the audit log with whose claim it was."""
    reviewer = authorize(user, f"release the claim on {lora_id}", policy)
    lora_id = _resolved(store, lora_id)
    with store.transaction():
        holder = store.review.claim_holder(lora_id)
        if holder is None:
            return False
        if holder != reviewer and not force:
            raise PermissionDeniedError(f"{lora_id} is claimed by {holder}: only they may release it")
        store.review.release_claim(lora_id)
        _log_event(store, lora_id, reviewer, "release", None if holder == reviewer else f"released the claim of {holder}")
    return True


def _log_event(store: Store, lora_id: str, reviewer: str, action: str, note: str | None) -> None:
    """A claim or release in the audit log (the status does not change)."""
    status = store.review.status_of(lora_id) or "unreviewed"
    store.review.append_decision(lora_id, reviewer, action, status, status, note)


def decide(
    store: Store,
    lora_id: str,
    user: CurrentUser,
    action: str,
    note: str | None = None,
    *,
    require_claim: bool = True,
    policy: AccessPolicy | None = None,
) -> int:
    """Record a decision; the item must be claimed by ``user`` (or unclaimed when
    ``require_claim`` is False). Returns the decision id; the claim is released."""
    reviewer = authorize(user, f"record a decision on {lora_id}", policy)
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


def bulk_flag(
    store: Store, lora_ids: Iterable[str], user: CurrentUser, note: str | None = None, *, policy: AccessPolicy | None = None
) -> dict:
    """Flag many LoRAs (e.g. a scatter selection), named by any of their names; items
    claimed by others are skipped. Results are reported by lora_id."""
    keys = list(lora_ids)
    reviewer = authorize(user, f"flag {len(keys)} LoRA(s)", policy)
    policy = resolve_policy(user.secrets_files) if policy is None else policy  # read once for the batch
    ids = list(dict.fromkeys(_resolved(store, k) for k in keys))  # an unknown name fails before any write
    done, skipped = [], []
    for lid in ids:
        holder = store.review.claim_holder(lid)
        if holder not in (None, reviewer):
            skipped.append((lid, f"claimed by {holder}"))
            continue
        if (store.review.status_of(lid) or "unreviewed") == "flagged":
            skipped.append((lid, "already flagged"))
            continue
        decide(store, lid, user, "flag", note, require_claim=False, policy=policy)
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


def set_thresholds(
    store: Store, thresholds: Thresholds, user: CurrentUser, note: str | None = None, *, policy: AccessPolicy | None = None
) -> int:
    """Save the team's thresholds as ``user`` (kept with who and when); returns the setting id."""
    reviewer = authorize(user, "save the thresholds", policy)
    if note is not None and len(note) > MAX_NOTE:
        raise InvalidInputError(f"note is {len(note)} characters; keep it under {MAX_NOTE}")
    return store.review.record_thresholds(thresholds.strength_max, thresholds.consistency_min, reviewer, note)


def status_frame(store: Store, view: CorpusView) -> pd.DataFrame:
    """Per LoRA of ``view``: status, last reviewer/time/note and claim holder."""
    return statuses_of(view, store.review.current_statuses())


def statuses_of(view: CorpusView, current: pd.DataFrame) -> pd.DataFrame:
    """:func:`status_frame` from ``store.review.current_statuses()`` already read (a page model)."""
    df = view.frame[["lora_id", "name", "strength", "consistency", "sha256"]].merge(current, on="lora_id", how="left")
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
    near-duplicates (direction cosine ≥ ``near_duplicate_cos``), linked items in one
    ``group`` (:func:`carlos.review.duplicates.with_duplicates`: no n × n matrix)."""
    return queue_of(view, status_frame(store, view), statuses=statuses, near_duplicate_cos=near_duplicate_cos)


def queue_of(
    view: CorpusView, items: pd.DataFrame, *, statuses: Iterable[str] = OPEN_STATUSES, near_duplicate_cos: float = 0.95
) -> pd.DataFrame:
    """:func:`review_queue` over a :func:`status_frame` already read (a page model)."""
    statuses = tuple(statuses)
    bad = set(statuses) - set(STATUSES)
    if bad:
        raise InvalidInputError(f"unknown statuses {sorted(bad)}; valid: {', '.join(STATUSES)}")
    return with_duplicates(view, items, items[items["status"].isin(statuses)], near_duplicate_cos)


def export_audit_log(store: Store, fmt: str) -> bytes:
    """The whole audit log as CSV (string cells starting with = + - @, tab or CR prefixed with
    ``'``, so a spreadsheet shows them as text) or Parquet bytes (typed, unchanged)."""
    return audit_log_bytes(store.review.decisions(), fmt)


def audit_log_bytes(log: pd.DataFrame, fmt: str) -> bytes:
    """:func:`export_audit_log` of a log already read (the review page's model, made on click)."""
    if fmt == "csv":
        return csv_bytes(log)  # formula prefixes neutralized: names and notes are untrusted text
    if fmt == "parquet":
        buf = io.BytesIO()
        log.to_parquet(buf, index=False)
        return buf.getvalue()
    raise InvalidInputError(f"unknown export format {fmt!r}; choose csv or parquet")
