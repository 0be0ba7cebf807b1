"""The Characterize page's data: the recent jobs, and the watched job's progress (its fragment
reruns every 2 s, each run one store session)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from carlos.characterize import results
from carlos.pagemodels.common import cached_read
from carlos.store.representations import StoredRepresentation
from carlos.store.store import Store

#: A job's rows and what it stored (its representation).
JOB_AREAS = ("data", "jobs")


@dataclass(frozen=True)
class JobPanel:
    """One job as its progress panel shows it."""

    job: dict[str, Any] | None  # None: no such job
    adaptive: results.AdaptiveProgress | None  # an adaptive job's rounds; None for other protocols
    representation: StoredRepresentation | None  # what a finished job stored


def read_job(store: Store, job_id: int) -> JobPanel:
    """The job, its adaptive rounds and its result, in one session (none while the store is unchanged)."""
    return cached_read(store, ("job", job_id), lambda: _job(store, job_id), JOB_AREAS)


def _job(store: Store, job_id: int) -> JobPanel:
    with store.reading():
        job = results.job(store, job_id)
        if job is None:
            return JobPanel(None, None, None)
        rep = results.representation_of_job(store, job) if job["status"] == "finished" else None
        return JobPanel(job, results.adaptive_progress(store, job), rep)


def read_recent_jobs(store: Store, limit: int = 20) -> pd.DataFrame:
    """The latest jobs, newest first (one query; none while the store is unchanged)."""
    return cached_read(store, ("recent_jobs", limit), lambda: results.recent_jobs(store, limit=limit), JOB_AREAS)
