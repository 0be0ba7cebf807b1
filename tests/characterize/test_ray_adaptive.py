"""Adaptive jobs on a local Ray cluster (2 CPU workers, tiny backend): the driver decides after
each round, stops the LoRA early, stores no pair twice and ends with the representation and
the per-round decisions of a single-process :class:`carlos.characterize.jobs.Worker` run.

Small rounds (6 pairs) and loose targets keep it to a few rounds per LoRA; the same chunk size
on both sides makes the images in the same batches, so the stored diffs are bit-identical
(see tests/characterize/test_ray.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carlos.characterize import jobs
from carlos.characterize.ray_actors import RayConfig
from carlos.characterize.ray_driver import characterize_on_ray
from carlos.core.access import CurrentUser
from carlos.files.testing import make_test_lora
from carlos.store.store import Store

#: Rounds of 6 pairs, at least 2 of them; no filters (every LoRA is retained) and targets the
#: tiny LoRAs meet after a few rounds, well before the 4,480 pairs.
SETTINGS = {
    "pairs_per_round": 6,
    "growth": 0.0,
    "min_pairs": 12,
    "target_cosine": 0.9,
    "strength_half_width": 0.04,
    "consistency_half_width": 0.15,
    "thresholds": {"strength_max": None, "consistency_min": None},
}
CHUNK = 3
USER = CurrentUser.local("test")
SEEDS = (50, 51)


def _submit(store: Store, paths: list[Path]) -> list[int]:
    return [jobs.submit(store, p, user=USER, backend="tiny", protocol="adaptive", adaptive=SETTINGS).job_id for p in paths]


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("adaptive-loras")
    return [make_test_lora(root / f"l{s}.safetensors", seed=s) for s in SEEDS]


@pytest.fixture(scope="module")
def reference(loras: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The same jobs run by a single-process worker (before Ray starts: 2 cores)."""
    store = Store.open(tmp_path_factory.mktemp("adaptive-ref") / "ref.duckdb")
    worker = jobs.Worker(store, worker_id="reference", chunk_pairs=CHUNK)
    for job_id in _submit(store, loras):
        worker.run_one(job_id=job_id)
    return store


def test_adaptive_jobs_on_ray_stop_early_and_equal_the_worker(cluster, loras, reference, tmp_path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    job_ids = _submit(store, loras)
    seen: list[tuple[int, int]] = []
    report = characterize_on_ray(store, job_ids, config=RayConfig(actors=2, chunk_pairs=CHUNK), progress=lambda d, t: seen.append((d, t)))
    assert not report.failed and sorted(report.finished) == sorted(job_ids) and set(report.stopped) == set(job_ids)
    used = 0
    for job_id, ref_job in zip(job_ids, reference.jobs.recent().sort_values("job_id").to_dict("records")):
        job = store.jobs.get(job_id)
        (rep,) = store.reps.of(job["lora_id"])
        (want,) = reference.reps.of(ref_job["lora_id"])
        got_a, want_a = rep.provenance["adaptive"], want.provenance["adaptive"]
        assert job["status"] == "finished" and job["total"] == 4480
        # stopped with a reason, before the maximum, after more than the first round
        assert got_a["reason"] == want_a["reason"] == "direction and intervals settled"
        assert SETTINGS["min_pairs"] < got_a["pairs_used"] == want_a["pairs_used"] == rep.n_samples == job["done"] < 4480
        assert got_a["message"] == want_a["message"] and report.stopped[job_id] == got_a["message"]
        assert got_a["decision"] == want_a["decision"] and got_a["settings"] == want_a["settings"]
        # the same pairs, each stored once, and the same diffs
        meta, diffs = store.jobs.pair_diffs(job_id)
        ref_meta, ref_diffs = reference.jobs.pair_diffs(int(ref_job["job_id"]))
        assert meta["pair_index"].is_unique and list(meta["pair_index"]) == list(ref_meta["pair_index"])
        np.testing.assert_array_equal(diffs, ref_diffs)
        assert rep.strength == want.strength and rep.consistency == want.consistency
        np.testing.assert_array_equal(rep.direction, want.direction)
        # a decision after every round, the same as the worker's
        rounds = store.jobs.rounds(job_id)
        assert [r["n"] for r in rounds] == list(range(6, got_a["pairs_used"] + 1, 6))
        assert [r["decision"] for r in rounds] == [r["decision"] for r in reference.jobs.rounds(int(ref_job["job_id"]))]
        assert rounds[-1]["decision"]["stop"] and not any(r["decision"]["stop"] for r in rounds[:-1])
        used += got_a["pairs_used"]
    assert store.table_counts()["pair_results"] == used == report.lora_pairs_computed
    assert report.base_pairs_computed == max(r for r in (store.jobs.get(j)["done"] for j in job_ids))  # base only up to the stop
    assert seen[-1] == (used, used) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    # a rerun finds them finished; nothing is stored again
    again = characterize_on_ray(store, job_ids, config=RayConfig(actors=2, chunk_pairs=CHUNK))
    assert set(again.skipped) == set(job_ids) and store.table_counts()["pair_results"] == used
