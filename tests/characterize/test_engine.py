"""End-to-end characterization on the tiny backend (random weights, CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from carlos.characterize import jobs
from carlos.characterize.engine import verify_lora_file
from carlos.core.access import CurrentUser
from carlos.core.representation import summarize
from carlos.errors import InvalidLoRAFileError
from carlos.files.testing import make_test_lora
from carlos.files.validate import sha256_file
from carlos.store.store import Store
from carlos.viz.figures import category_strength_bar

USER = CurrentUser.local("test")  # local mode: anyone identified may write


@pytest.fixture(scope="module")
def worker_env(tmp_path_factory: pytest.TempPathFactory):
    """One store and one worker (pipeline + CLIP loaded once) for the module."""
    root = tmp_path_factory.mktemp("char")
    store = Store.open(root / "c.duckdb")
    return root, store, jobs.Worker(store, worker_id="test-worker", chunk_pairs=3)


def _characterize(worker_env, name: str, **lora_kwargs) -> tuple[str, int]:
    root, store, worker = worker_env
    path = root / f"{name}.safetensors"
    make_test_lora(path, **lora_kwargs)
    sub = jobs.submit(store, path, backend="tiny", protocol="smoke", user=USER)
    assert worker.run_one(job_id=sub.job_id) == sub.job_id
    job = store.jobs.get(sub.job_id)
    assert job["status"] == "finished", job["error"]
    return sub.lora_id, sub.job_id


def test_stored_representation_is_the_core_on_stored_diffs(worker_env) -> None:
    _, store, _ = worker_env
    lora_id, job_id = _characterize(worker_env, "kohya", seed=1, layout="kohya")
    rep = store.reps.of(lora_id)[0]
    meta, diffs = store.jobs.pair_diffs(job_id)
    expected = summarize(diffs)
    assert rep.n_samples == len(meta) == 4
    assert rep.strength == pytest.approx(expected.strength, rel=1e-6)
    assert rep.consistency == pytest.approx(expected.consistency, rel=1e-6, abs=1e-9)
    np.testing.assert_allclose(rep.direction, expected.direction, rtol=1e-5, atol=1e-7)
    assert rep.strength > 0.01
    prov = rep.provenance
    assert prov["protocol"] == "smoke" and prov["backend"].startswith("tiny-sdxl")
    assert rep.embedder.startswith("tiny-clip") and len(prov["prompt_hash"]) == 64
    cats = category_strength_bar(store.jobs.pair_results_of(lora_id, job_id))  # the detail page's per-category Strength
    assert set(cats.data[0].y) == {"Portraits", "Landscapes"}
    thumbs = store.jobs.thumbnails(job_id)
    assert len(thumbs) == 4 and thumbs["base_png"].map(lambda b: b[:4] == b"\x89PNG").all()


def test_zero_lora_has_no_strength_and_layouts_differ(worker_env) -> None:
    _, store, worker = worker_env
    zero_id, _ = _characterize(worker_env, "zero", seed=2, zero=True)
    assert store.reps.of(zero_id)[0].strength < 1e-4
    a, _ = _characterize(worker_env, "diffusers-a", seed=3, layout="diffusers")
    b, _ = _characterize(worker_env, "kohya-b", seed=4, layout="kohya")
    da = store.reps.of(a)[0].direction
    db = store.reps.of(b)[0].direction
    cos = float(da @ db / (np.linalg.norm(da) * np.linalg.norm(db)))
    assert cos < 0.999, "two different LoRAs must not get the same direction"


def test_base_images_are_generated_once_and_reused(worker_env) -> None:
    _, _, worker = worker_env
    stats = worker.characterizer("tiny", "smoke").stats
    before_generated, before_hits = stats.base_generated, stats.base_cache_hits
    _characterize(worker_env, "reuse", seed=6)
    assert stats.base_generated == before_generated  # all 4 base pairs came from the cache
    assert stats.base_cache_hits == before_hits + 4
    assert worker.characterizer("tiny", "smoke").backend.pipeline_loads == 1


def test_same_file_twice_is_the_same_lora_and_job(worker_env) -> None:
    root, store, _ = worker_env
    path = root / "twice.safetensors"
    make_test_lora(path, seed=9)
    first = jobs.submit(store, path, backend="tiny", protocol="smoke", user=USER)
    copy = root / "renamed copy.safetensors"
    copy.write_bytes(path.read_bytes())
    second = jobs.submit(store, copy, backend="tiny", protocol="smoke", user=USER)
    assert second.lora_id == first.lora_id and second.duplicate_of_job == first.job_id
    assert second.already_known


def test_jobs_run_the_fast_path_without_emptying_the_cuda_cache(worker_env) -> None:
    """The worker's backend fuses each LoRA for its job (base images swapped in where a chunk
    needs them) and restores the base weights after it; nothing calls torch.cuda.empty_cache."""
    from carlos.models.fast_path import count_empty_cache

    _, _, worker = worker_env
    backend = worker.characterizer("tiny", "smoke").backend
    assert backend.fast_path.fuse_lora and set(backend.fast_report["attention_processors"]) == {"AttnProcessor2_0"}
    loads = backend.lora_loads
    with count_empty_cache() as calls:
        _characterize(worker_env, "fast-a", seed=11)
        _characterize(worker_env, "fast-b", seed=12, layout="diffusers")
    assert calls == [] and backend.lora_loads == loads + 2 and backend.fused is None and backend.active_lora is None


def _tamper_after_submit(worker_env, name: str, protocol: str = "smoke", **submit_kwargs):
    """Submit a LoRA, then replace its stored upload with another valid LoRA file."""
    root, store, _ = worker_env
    path = root / f"{name}.safetensors"
    make_test_lora(path, seed=5)
    sub = jobs.submit(store, path, backend="tiny", protocol=protocol, user=USER, **submit_kwargs)
    stored = store.jobs.get(sub.job_id)["file_path"]
    make_test_lora(stored, seed=6)  # the file was replaced after it was validated
    return sub, sha256_file(stored)


def test_a_file_changed_after_submit_fails_the_job_before_anything_is_generated(worker_env) -> None:
    _, store, worker = worker_env
    sub, actual = _tamper_after_submit(worker_env, "tampered")
    before = worker.characterizer("tiny", "smoke").stats.lora_generated
    assert worker.run_one(job_id=sub.job_id) == sub.job_id
    job = store.jobs.get(sub.job_id)
    expected = sub.lora_id.removeprefix("sha256:")
    assert job["status"] == "failed"
    assert f"expected sha256 {expected}" in job["error"] and f"got {actual}" in job["error"]
    assert "replaced or corrupted after upload" in job["error"]
    assert store.jobs.done_pairs(sub.job_id) == set() and store.reps.of(sub.lora_id) == []
    assert worker.characterizer("tiny", "smoke").stats.lora_generated == before


def test_verify_lora_file_names_both_hashes(tmp_path) -> None:
    path = make_test_lora(tmp_path / "l.safetensors", seed=1)
    good = sha256_file(path)
    verify_lora_file(str(path), good)
    verify_lora_file(str(path), None)  # a job queued without a hash: nothing to compare
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one corrupted byte
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidLoRAFileError, match=f"on node-7 does not match its upload: expected sha256 {good}, got {sha256_file(path)}"):
        verify_lora_file(str(path), good, where="node-7")
    with pytest.raises(InvalidLoRAFileError, match="unreadable"):
        verify_lora_file(str(tmp_path / "gone.safetensors"), good)
