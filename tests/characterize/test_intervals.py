"""Intervals stored with a characterization (tiny backend, CPU): a ``quick`` run's intervals
contain the values of a run 4× larger (the first four index prompts of every subcategory, 140 of the
paper profile's 280, × the same 2 seeds: the quick pairs and 210 more)."""

from __future__ import annotations

import numpy as np
import pytest

from carlos.characterize import jobs
from carlos.characterize.engine import Pair, job_prompt_set
from carlos.core.access import CurrentUser
from carlos.core.representation import summarize
from carlos.core.uncertainty import Uncertainty, estimate
from carlos.data.prompts import get_prompt_set
from carlos.files.testing import make_test_lora
from carlos.store.store import Store

USER = CurrentUser.local("test")  # local mode: anyone identified may write


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("intervals")
    store = Store.open(root / "u.duckdb")
    worker = jobs.Worker(store, worker_id="interval-test", chunk_pairs=35)
    path = root / "lora.safetensors"
    make_test_lora(path, seed=1)
    sub = jobs.submit(store, path, backend="tiny", protocol="quick", user=USER)
    assert worker.run_one(job_id=sub.job_id) == sub.job_id
    job = store.jobs.get(sub.job_id)
    assert job["status"] == "finished", job["error"]
    meta, quick = store.jobs.pair_diffs(sub.job_id)

    # the larger run with the engine's pieces: the quick pairs (the first prompt of every subcategory)
    # are among its pairs and reused (4x, not 8x with all 280 prompts: the test suite's time)
    subset = get_prompt_set(job_prompt_set(job.get("options"))).subset("index", per_subcategory=4)
    pairs = [Pair(0, p.text, p.category, seed) for p in subset.prompts for seed in range(2)]
    assert len(pairs) == 4 * len(meta)
    have = {(p, int(s)): d for p, s, d in zip(meta["prompt"], meta["seed"], quick)}
    todo = [p for p in pairs if (p.prompt, p.seed) not in have]
    char = worker.characterizer("tiny", "quick")
    chunks = [todo[i : i + 105] for i in range(0, len(todo), 105)]
    base = [char.clip.image_features(char.backend.generate([p.prompt for p in c], [p.seed for p in c], base=True)) for c in chunks]
    with char.backend.lora(str(path)):
        for chunk, b in zip(chunks, base):
            lora = char.clip.image_features(char.backend.generate([p.prompt for p in chunk], [p.seed for p in chunk]))
            have.update({(p.prompt, p.seed): f.astype(np.float64) - e for p, e, f in zip(chunk, b, lora)})
    big = np.array([have[(p.prompt, p.seed)] for p in pairs])
    return store, sub.lora_id, quick, meta, big, [p.prompt for p in pairs]


def test_quick_intervals_are_stored_with_the_representation(runs) -> None:
    store, lora_id, quick, meta, _, _ = runs
    rep = store.reps.of(lora_id)[0]
    stored = Uncertainty.from_dict(rep.provenance["uncertainty"])
    assert stored == estimate(quick, meta["prompt"].tolist())
    assert stored.available and stored.n == 70 and stored.n_clusters == 35
    assert stored.strength == pytest.approx(rep.strength, rel=1e-6)
    assert stored.consistency == pytest.approx(rep.consistency, rel=1e-6, abs=1e-9)
    lo, hi = stored.strength_interval
    assert lo < rep.strength < hi and stored.strength_se > 0


def test_quick_intervals_contain_the_four_times_larger_run(runs) -> None:
    store, lora_id, quick, meta, big, big_prompts = runs
    q = Uncertainty.from_dict(store.reps.of(lora_id)[0].provenance["uncertainty"])
    large = summarize(big)
    large_u = estimate(big, big_prompts)
    lo, hi = q.strength_interval
    assert lo <= large.strength <= hi, (q.strength_text(), large.strength)
    lo, hi = q.consistency_interval
    assert lo <= large.consistency <= hi, (q.consistency_text(), large.consistency)
    assert lo <= large_u.consistency_estimate <= hi
    # the larger run is about twice as precise (√4); the Directions agree as the expected cosines say
    assert large_u.strength_se < q.strength_se and large_u.consistency_se < q.consistency_se
    qd, ld = summarize(quick).direction, large.direction
    cos = float(qd @ ld / (np.linalg.norm(qd) * np.linalg.norm(ld)))
    assert cos >= q.expected_cosine * large_u.expected_cosine - 0.05
