"""What characterization leaves in the store, as the pages and the CLI read it: jobs, the
representation a job produced, per-pair results, image thumbnails of one LoRA, the
intervals and confident risk class stored with a representation (``provenance["uncertainty"]``)
and an adaptive job's state round by round (:func:`adaptive_progress`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from carlos.characterize.adaptive_run import PROTOCOL as ADAPTIVE
from carlos.characterize.adaptive_run import settings_of
from carlos.config import Thresholds
from carlos.core.confidence import NO_INTERVAL, risk_call
from carlos.core.uncertainty import Uncertainty
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


def uncertainty_of(rep: StoredRepresentation) -> Uncertainty | None:
    """The intervals stored with a representation; None for corpus rows (no per-pair data)."""
    stored = rep.provenance.get("uncertainty")
    return Uncertainty.from_dict(stored) if isinstance(stored, dict) else None


def interval_fields(rep: StoredRepresentation, thresholds: Thresholds, review_cuts: tuple[float, float] | None = None) -> dict[str, Any]:
    """What ``show`` and the detail page print of one representation's uncertainty: the stored
    result, the texts "4.12 ± 0.31 (95%: 3.50–4.74)" and the risk class with its confidence."""
    u = uncertainty_of(rep)
    call = risk_call(u, thresholds, review_cuts)
    return {
        "uncertainty": None if u is None else u.to_dict(),
        "strength_text": NO_INTERVAL if u is None else u.strength_text(),
        "consistency_text": NO_INTERVAL if u is None else u.consistency_text(),
        "risk_confidence": call.label,
        "risk_probabilities": call.probabilities,
    }


INTERVAL_COLUMNS = ("strength_lo", "strength_hi", "consistency_lo", "consistency_hi", "risk_confidence")


def stored_uncertainties(store: Store, frame: pd.DataFrame) -> dict[int, Any]:
    """rep_id -> the stored uncertainty of each upload row of a corpus frame (one query; corpus rows have none)."""
    if frame.empty or "rep_id" not in frame:
        return {}
    rows = frame[frame["source"] == "upload"] if "source" in frame else frame
    return store.reps.provenance_field(rows["rep_id"].astype(int).tolist(), "uncertainty")


def interval_frame(
    frame: pd.DataFrame, stored: dict[int, Any], thresholds: Thresholds, review_cuts: tuple[float, float] | None = None
) -> pd.DataFrame:
    """Per uploaded LoRA of a corpus frame (its ``rep_id`` rows), the 95 % intervals and the risk
    class with confidence, from :func:`stored_uncertainties`; LoRAs without stored intervals are left out."""
    cols = ["lora_id", *INTERVAL_COLUMNS]
    if frame.empty or "rep_id" not in frame:
        return pd.DataFrame(columns=cols)
    rows = frame[frame["source"] == "upload"] if "source" in frame else frame
    out = []
    for lora_id, rep_id in zip(rows["lora_id"], rows["rep_id"].astype(int)):
        u = Uncertainty.from_dict(stored[rep_id]) if rep_id in stored else None
        if u is None or not u.available or u.strength_interval is None or u.consistency_interval is None:
            continue
        (s_lo, s_hi), (c_lo, c_hi) = u.strength_interval, u.consistency_interval
        out.append((lora_id, s_lo, s_hi, c_lo, c_hi, risk_call(u, thresholds, review_cuts).label))
    return pd.DataFrame(out, columns=cols)


def representation_intervals(reps: Sequence[StoredRepresentation]) -> pd.DataFrame:
    """One row per representation with intervals (a LoRA's local characterizations, read with
    ``store.reps.of``), in the given order: label, the stored Strength and Consistency and their 95 % bounds."""
    rows = []
    for rep in reps:
        u = uncertainty_of(rep)
        if u is None or u.strength_interval is None or u.consistency_interval is None:
            continue
        prov = rep.provenance
        label = f"{prov.get('protocol')} · {prov.get('backend')} · {rep.embedder} (#{rep.rep_id})"
        rows.append((label, rep.strength, *u.strength_interval, rep.consistency, *u.consistency_interval, u.n_clusters))
    cols = ["label", "strength", "strength_lo", "strength_hi", "consistency", "consistency_lo", "consistency_hi", "prompts"]
    return pd.DataFrame(rows, columns=cols)


#: Columns of :attr:`AdaptiveProgress.rounds` (``carlos.viz.adaptive.narrowing_figure`` draws them).
ROUND_COLUMNS = ("round", "n", "strength", "strength_lo", "strength_hi", "consistency", "consistency_lo", "consistency_hi", "waiting_for")


@dataclass(frozen=True)
class AdaptiveProgress:
    """Where an adaptive job stands: the line to show and the decision after every round so far."""

    message: str  # "420 of 4,480 pairs; waiting for: consistency" or "stopped after 420 of 4,480 pairs: <reason>"
    stopped: bool  # finished with its stopping reason
    rounds: pd.DataFrame  # one row per round decided (ROUND_COLUMNS), in order
    thresholds: Thresholds  # the thresholds the job's rule decides with


def adaptive_progress(store: Store, job_row: dict[str, Any]) -> AdaptiveProgress | None:
    """An adaptive job's state after each round (recorded by the worker and the Ray driver as they
    decide); None for a job of another protocol."""
    if job_row.get("protocol") != ADAPTIVE:
        return None
    rounds = store.jobs.rounds(int(job_row["job_id"]))
    rows = []
    for r in rounds:
        d = r["decision"]
        s_lo, s_hi = d.get("strength_interval") or (None, None)
        c_lo, c_hi = d.get("consistency_interval") or (None, None)
        rows.append(
            (r["round_index"] + 1, r["n"], d.get("strength"), s_lo, s_hi, d.get("consistency"), c_lo, c_hi, ", ".join(d["waiting_for"]))
        )
    frame = pd.DataFrame(rows, columns=list(ROUND_COLUMNS))
    thresholds = settings_of(job_row.get("options"))[1]
    rep = representation_of_job(store, job_row) if job_row["status"] == "finished" else None
    adaptive = rep.provenance.get("adaptive") if rep is not None else None
    if adaptive:
        return AdaptiveProgress(str(adaptive["message"]), True, frame, thresholds)
    if rounds:
        message = str(rounds[-1]["decision"]["message"])
    else:
        message = f"{int(job_row['done']):,} of {int(job_row['total']):,} pairs; waiting for: the first round"
    return AdaptiveProgress(message, False, frame, thresholds)
