"""The ``adaptive`` protocol in the worker: the paper's pairs in stratified rounds, stopped early.

The job's pairs are the paper's (280 prompts × 16 images; its ``total`` stays 4,480 until it
stops). :func:`carlos.core.adaptive.schedule` orders them into rounds (a new prompt of every
subcategory first, images j in the authors' order); after each round the stopping rule
(:func:`carlos.core.adaptive.decide`) reads the per-prompt sums of the pairs of the rounds so
far, **from the store**, so a resumed job replays the same decisions and stops at the same pair.
The representation is then stored with ``provenance["adaptive"]``: pairs used, the reason, the
message ("stopped after 455 of 4,480 pairs: direction and intervals settled"), the settings and
the decision's intervals.

Settings come from the job's options (``options["adaptive"]``, a dict of
:class:`~carlos.core.adaptive.AdaptiveSettings` fields; tests pass small ones), thresholds from
``options["thresholds"]`` (default: the paper's).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from carlos.config import Thresholds
from carlos.core.adaptive import AdaptiveSettings, StopDecision, decide, schedule
from carlos.core.representation import Representation
from carlos.core.uncertainty import PromptSums

log = logging.getLogger(__name__)

PROTOCOL = "adaptive"


def settings_of(options: dict[str, Any] | None) -> tuple[AdaptiveSettings, Thresholds]:
    """The job's stopping settings and thresholds (unknown keys are ignored)."""
    opts = options or {}
    names = {f.name for f in fields(AdaptiveSettings)}
    settings = AdaptiveSettings(**{k: v for k, v in (opts.get("adaptive") or {}).items() if k in names})
    t = opts.get("thresholds") or {}
    thresholds = Thresholds(**{k: t[k] for k in ("strength_max", "consistency_min") if k in t}) if t else Thresholds()
    return settings, thresholds


def rounds_of(pairs: list[Any], subset: Any, settings: AdaptiveSettings) -> list[list[int]]:
    """The job's rounds as lists of pair indices (pairs are prompt-major: prompt k, image j)."""
    per_prompt = len(pairs) // max(len(subset.prompts), 1)
    labels = [getattr(p, "subcategory", None) or p.category for p in subset.prompts]
    cap = AdaptiveSettings(**{**settings.to_dict(), "max_pairs": min(settings.max_pairs, len(pairs))})
    return [[k * per_prompt + j for k, j in rnd] for rnd in schedule(labels, per_prompt, cap)]


def decision_at(store: Any, job_id: int, indices: set[int], settings: AdaptiveSettings, thresholds: Thresholds) -> StopDecision:
    """The rule on the stored pairs among ``indices`` (the rounds so far)."""
    meta, diffs = store.jobs.pair_diffs(job_id)
    keep = meta["pair_index"].isin(indices).to_numpy()
    return decide(PromptSums.from_diffs(np.asarray(diffs)[keep], meta["prompt"][keep].tolist()), settings, thresholds)


def provenance_of(decision: StopDecision, settings: AdaptiveSettings, max_pairs: int) -> dict[str, Any]:
    """What the representation records about the adaptive run."""
    return {
        "pairs_used": decision.n,
        "max_pairs": max_pairs,
        "reason": decision.reason,
        "message": decision.message(max_pairs),
        "settings": settings.to_dict(),
        "decision": decision.to_dict(),
    }


def run_adaptive(
    char: Any,
    job: dict[str, Any],
    pairs: list[Any],
    subset: Any,
    protocol: Any,
    trigger: Sequence[str],
    *,
    progress: Any = None,
    should_continue: Any = None,
) -> Representation | None:
    """Run an ``adaptive`` job on ``char`` (a :class:`~carlos.characterize.engine.Characterizer`,
    which passes the job's pairs, prompt subset, protocol and trigger words)."""
    settings, thresholds = settings_of(job.get("options"))
    job_id = int(job["job_id"])
    total = len(pairs)
    done = char.store.jobs.done_pairs(job_id)
    char.stats.pairs_skipped_as_done += len(done)
    if progress:
        progress(len(done), total)
    so_far: set[int] = set()
    decision = None
    with char.lora_of(job):  # re-verifies the file against its upload sha256
        for rnd in rounds_of(pairs, subset, settings):
            so_far.update(rnd)
            todo = [pairs[i] for i in rnd if i not in done]
            for start in range(0, len(todo), char.chunk_pairs):
                if should_continue is not None and not should_continue():
                    log.info("adaptive job %d stopped (cancelled) after %d pairs", job_id, len(so_far) - len(todo) + start)
                    return None
                n_done = char.run_pairs(job_id, todo[start : start + char.chunk_pairs], trigger)
                if progress:
                    progress(n_done, total)
            done.update(i for i in rnd)
            if len(so_far) < settings.min_pairs and len(so_far) < total:
                continue
            decision = decision_at(char.store, job_id, so_far, settings, thresholds)
            if decision.stop:
                break
    if decision is None:  # fewer pairs than one round (a tiny prompt set)
        decision = decision_at(char.store, job_id, so_far, settings, thresholds)
    adaptive = provenance_of(decision, settings, total)
    log.info("job %d: %s", job_id, adaptive["message"])
    return char.finish(job, subset, protocol, trigger, adaptive=adaptive)
