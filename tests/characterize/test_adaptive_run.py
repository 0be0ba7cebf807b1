"""The ``adaptive`` protocol in the worker (tiny backend): rounds, an early stop with its reason, provenance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carlos.characterize import jobs
from carlos.characterize.adaptive_run import rounds_of
from carlos.characterize.engine import get_protocol, protocol_pairs
from carlos.core.access import CurrentUser
from carlos.core.adaptive import AdaptiveSettings
from carlos.core.representation import summarize
from carlos.files.testing import make_test_lora
from carlos.files.validate import sha256_file
from carlos.store.store import Store

#: No filters (every LoRA is settled as retained) and loose targets: it stops at the minimum.
LOOSE = {"min_pairs": 35, "target_cosine": 0.01, "strength_half_width": 1e6, "consistency_half_width": 1e6}
NO_FILTERS = {"strength_max": None, "consistency_min": None}
USER = CurrentUser.local("test")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("adaptive")
    store = Store.open(root / "a.duckdb")
    return root, store, jobs.Worker(store, worker_id="adaptive-test", chunk_pairs=35)


def _run(env, name: str, adaptive: dict) -> tuple[dict, object, int]:
    root, store, worker = env
    path = root / f"{name}.safetensors"
    make_test_lora(path, seed=11)
    sub = jobs.submit(store, path, backend="tiny", protocol="adaptive", user=USER, adaptive=adaptive)
    seen: list[tuple[int, int]] = []
    assert worker.run_one(job_id=sub.job_id, progress=lambda d, t: seen.append((d, t))) == sub.job_id
    job = store.jobs.get(sub.job_id)
    assert job["status"] == "finished", job["error"]
    assert job["total"] == 4480 and all(t == 4480 for _, t in seen)  # the max until it stops
    rep = next(r for r in store.reps.of(sub.lora_id) if r.provenance.get("job_id") == sub.job_id)
    return job, rep, sub.job_id


def test_rounds_are_stratified_image_zero_first() -> None:
    pairs, subset = protocol_pairs(get_protocol("adaptive"))
    rounds = rounds_of(pairs, subset, AdaptiveSettings())
    assert len(pairs) == 4480 and sum(map(len, rounds)) == 4480 and len({i for r in rounds for i in r}) == 4480
    first = [pairs[i] for i in rounds[0]]
    assert len({subset.prompts[i // 16].subcategory for i in rounds[0]}) == 35 and {p.seed for p in first} == {0}
    assert {pairs[i].seed for r in rounds[:8] for i in r} == {0}  # every prompt's image 0 before any image 1


def test_adaptive_job_stops_early_with_its_reason(env) -> None:
    _, store, _ = env
    job, rep, job_id = _run(env, "loose", {**LOOSE, "thresholds": NO_FILTERS})
    a = rep.provenance["adaptive"]
    assert a["pairs_used"] == rep.n_samples == 35 < 4480
    assert a["reason"] == "direction and intervals settled"
    assert a["message"] == "stopped after 35 of 4,480 pairs: direction and intervals settled"
    assert rep.provenance["protocol"] == "adaptive" and rep.provenance["uncertainty"]["n"] == 35
    meta, diffs = store.jobs.pair_diffs(job_id)
    assert len(meta) == 35 and set(meta["seed"]) == {0} and meta["prompt"].nunique() == 35
    assert rep.strength == pytest.approx(summarize(diffs).strength, rel=1e-6)


def test_adaptive_job_stops_at_its_maximum(env) -> None:
    _, store, _ = env
    _, rep, job_id = _run(env, "strict", {"min_pairs": 35, "max_pairs": 70, "target_cosine": 1.0, "strength_half_width": 1e-9})
    a = rep.provenance["adaptive"]
    assert a["pairs_used"] == rep.n_samples == 70
    assert a["reason"] == "reached the maximum of 70 pairs"
    assert np.isfinite(rep.strength)
    # every round's decision is recorded: what the Characterize page draws while it runs
    first, last = store.jobs.rounds(job_id)
    assert (first["round_index"], first["n"], last["round_index"], last["n"]) == (0, 35, 1, 70)
    assert not first["decision"]["stop"] and "strength" in first["decision"]["waiting_for"]
    assert first["decision"]["message"] == f"35 of 4,480 pairs; waiting for: {', '.join(first['decision']['waiting_for'])}"
    assert last["decision"]["stop"] and last["decision"]["message"] == a["message"] and last["decision"]["reason"] == a["reason"]
    lo, hi = last["decision"]["strength_interval"]
    assert lo <= last["decision"]["strength"] <= hi and last["decision"]["strength"] == pytest.approx(rep.strength, rel=1e-6)


def test_a_resumed_adaptive_job_replays_its_rounds_and_stops_at_the_same_pair(env) -> None:
    root, store, worker = env
    settings = {"pairs_per_round": 5, "growth": 0.0, "min_pairs": 5, "max_pairs": 15, "target_cosine": 1.0, "strength_half_width": 1e-9}
    path = make_test_lora(root / "resumed.safetensors", seed=13)
    sub = jobs.submit(store, path, user=USER, backend="tiny", protocol="adaptive", adaptive=settings)
    answers = iter([True, False])  # asked before each chunk (one per round here): stop before round 2
    char = worker.characterizer("tiny", "adaptive")
    assert char.run_job(store.jobs.get(sub.job_id), should_continue=lambda: next(answers)) is None
    assert len(store.jobs.done_pairs(sub.job_id)) == 5 and [r["n"] for r in store.jobs.rounds(sub.job_id)] == [5]
    assert worker.run_one(job_id=sub.job_id) == sub.job_id  # resumes: round 1 decided again from the store
    rep = next(r for r in store.reps.of(sub.lora_id) if r.provenance.get("job_id") == sub.job_id)
    assert rep.provenance["adaptive"]["pairs_used"] == rep.n_samples == 15
    assert rep.provenance["adaptive"]["reason"] == "reached the maximum of 15 pairs"
    assert [r["n"] for r in store.jobs.rounds(sub.job_id)] == [5, 10, 15] and len(store.jobs.done_pairs(sub.job_id)) == 15


def test_an_adaptive_job_whose_file_was_corrupted_after_submit_fails_untouched(env) -> None:
    root, store, worker = env
    path = make_test_lora(root / "corrupted.safetensors", seed=12)
    sub = jobs.submit(store, path, backend="tiny", protocol="adaptive", user=USER, adaptive=LOOSE)
    stored = Path(store.jobs.get(sub.job_id)["file_path"])
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    assert worker.run_one(job_id=sub.job_id) == sub.job_id
    job = store.jobs.get(sub.job_id)
    assert job["status"] == "failed"
    assert f"expected sha256 {sub.lora_id.removeprefix('sha256:')}, got {sha256_file(stored)}" in job["error"]
    assert store.jobs.done_pairs(sub.job_id) == set() and store.reps.of(sub.lora_id) == []
