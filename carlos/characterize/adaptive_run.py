"""The ``adaptive`` protocol: the paper's pairs in stratified rounds, stopped early.

The job's pairs are the paper's (280 prompts × 16 images; its ``total`` stays 4,480 until it
stops). :func:`carlos.core.adaptive.schedule` orders them into rounds (a new prompt of every
subcategory first, images j in the authors' order); after each round the stopping rule
(:func:`carlos.core.adaptive.decide`) reads the per-prompt sums of the pairs of the rounds so
far, **from the store**, so a resumed job replays the same decisions and stops at the same pair.
The representation is then stored with ``provenance["adaptive"]``: pairs used, the reason, the
message ("stopped after 455 of 4,480 pairs: direction and intervals settled"), the settings and
the decision's intervals. Every round's decision is also recorded (``store.jobs.rounds``:
the pairs so far, what the rule waits for, the intervals), which the Characterize page draws
while the job runs. :class:`AdaptivePlan` is that walk through the rounds; the single-process
worker (:func:`run_adaptive`) and the Ray driver (:mod:`carlos.characterize.ray_driver`) both
run it, so they store the same pairs and stop at the same round.

Settings come from the job's options (``options["adaptive"]``, a dict of
:class:`~carlos.core.adaptive.AdaptiveSettings` fields; tests pass small ones), thresholds from
``options["thresholds"]`` (default: the paper's).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from carlos.config import Thresholds
from carlos.core.adaptive import AdaptiveSettings, StopDecision, decide_from, schedule
from carlos.core.representation import Representation
from carlos.core.uncertainty import PromptSums, from_sums
from carlos.errors import InvalidInputError

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
    return _look(store, job_id, indices, settings, thresholds)[0]


def _look(store: Any, job_id: int, indices: set[int], settings: AdaptiveSettings, thresholds: Thresholds) -> tuple[StopDecision, Any]:
    meta, diffs = store.jobs.pair_diffs(job_id)
    keep = meta["pair_index"].isin(indices).to_numpy()
    unc = from_sums(PromptSums.from_diffs(np.asarray(diffs)[keep], meta["prompt"][keep].tolist()), confidence=settings.confidence)
    return decide_from(unc, settings, thresholds), unc


def _plain(value: Any) -> Any:
    """JSON-ready: numpy numbers as Python ones, NaN and infinities as None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


class AdaptivePlan:
    """One adaptive job's walk through its rounds, shared by the worker (:func:`run_adaptive`)
    and the Ray driver: :meth:`next_round` starts a round, :meth:`look` decides once all its
    pairs are stored and records the decision (``store.jobs.rounds``: the Characterize page's
    live view), :meth:`provenance` is what the representation keeps."""

    def __init__(self, store: Any, job: dict[str, Any], pairs: list[Any], subset: Any) -> None:
        self.store, self.job_id, self.pairs, self.total = store, int(job["job_id"]), pairs, len(pairs)
        self.settings, self.thresholds = settings_of(job.get("options"))
        self.rounds = rounds_of(pairs, subset, self.settings)
        self.round = -1  # index of the round under way
        self.so_far: set[int] = set()  # pair indices of the rounds started
        self.decision: StopDecision | None = None

    def next_round(self) -> list[int] | None:
        """Start the next round: its pair indices (schedule order), or None after the last."""
        if self.round + 1 >= len(self.rounds):
            return None
        self.round += 1
        self.so_far.update(self.rounds[self.round])
        return self.rounds[self.round]

    def next_pairs(self, stored: set[int]) -> list[Any]:
        """The pairs to make next: those of the next round whose index is not in ``stored``; rounds
        found all stored (a resumed job) are decided on the way. [] once the rule stops or the
        schedule ends."""
        while not self.stopped and (rnd := self.next_round()) is not None:
            todo = [self.pairs[i] for i in rnd if i not in stored]
            if todo:
                return todo
            self.look()
        return []

    def look(self) -> StopDecision:
        """The rule on the stored pairs of the rounds so far, recorded as this round's decision."""
        decision, unc = _look(self.store, self.job_id, self.so_far, self.settings, self.thresholds)
        record = {**decision.to_dict(), "strength": unc.strength, "consistency": unc.consistency}
        self.store.jobs.put_round(self.job_id, self.round, decision.n, {**_plain(record), "message": decision.message(self.total)})
        self.decision = decision
        return decision

    @property
    def stopped(self) -> bool:
        return self.decision is not None and self.decision.stop

    def provenance(self) -> dict[str, Any]:
        """``provenance["adaptive"]`` of the finished job (after at least one :meth:`look`)."""
        if self.decision is None:
            raise InvalidInputError(f"adaptive job {self.job_id} has no decision yet")
        return provenance_of(self.decision, self.settings, self.total)


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
    job_id = int(job["job_id"])
    plan = AdaptivePlan(char.store, job, pairs, subset)
    total = len(pairs)
    done = char.store.jobs.done_pairs(job_id)
    char.stats.pairs_skipped_as_done += len(done)
    if progress:
        progress(len(done), total)
    with char.lora_of(job):  # re-verifies the file against its upload sha256
        while todo := plan.next_pairs(done):
            for start in range(0, len(todo), char.chunk_pairs):
                if should_continue is not None and not should_continue():
                    log.info("adaptive job %d stopped (cancelled) after %d pairs", job_id, len(plan.so_far) - len(todo) + start)
                    return None
                n_done = char.run_pairs(job_id, todo[start : start + char.chunk_pairs], trigger)
                if progress:
                    progress(n_done, total)
            done.update(p.index for p in todo)
            plan.look()
    adaptive = plan.provenance()
    log.info("job %d: %s", job_id, adaptive["message"])
    return char.finish(job, subset, protocol, trigger, adaptive=adaptive)
