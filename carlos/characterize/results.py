"""What characterization leaves in the store, as the pages and the CLI read it: jobs, the
representation a job produced, per-pair results and image thumbnails of one LoRA."""

from __future__ import annotations

from typing import Any

import pandas as pd

from carlos.store.representations import StoredRepresentation
from carlos.store.store import Store


def job(store: Store, job_id: int) -> dict[str, Any] | None:
    """One job (status, progress, error), or None when there is no such job."""
    return store.jobs.get(job_id)


def recent_jobs(store: Store, *, status: str | None = None, limit: int = 100) -> pd.DataFrame:
    """Jobs, newest first, optionally of one status."""
    return store.jobs.recent(status=status, limit=limit)


def representation_of_job(store: Store, job_row: dict[str, Any]) -> StoredRepresentation | None:
    """The representation a finished job stored, or None."""
    return next((r for r in store.reps.of(job_row["lora_id"]) if r.provenance.get("job_id") == job_row["job_id"]), None)


def pair_results(store: Store, lora_id: str) -> pd.DataFrame:
    """Per-pair results of the LoRA's local characterization (empty for corpus LoRAs)."""
    return store.jobs.pair_results_of(lora_id)


def thumbnails(store: Store, lora_id: str) -> pd.DataFrame:
    """Base/LoRA thumbnail pairs of the LoRA's local characterization (empty when none)."""
    return store.jobs.thumbnails_of(lora_id)
