"""Distributed characterization on a local Ray cluster: 2 CPU workers, the tiny backend.

A worker process dies mid-run (Ray restarts it and retries its chunk) and a driver stops
mid-run and is started again; both must end with every pair stored once and with the
representations of a single-process :class:`carlos.characterize.jobs.Worker` run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from carlos.characterize import jobs
from carlos.characterize import ray_driver as distributed
from carlos.characterize.ray_actors import RayConfig
from carlos.characterize.ray_driver import characterize_on_ray
from carlos.cli.main import main
from carlos.cli.ray import read_manifest
from carlos.core.access import CurrentUser
from carlos.errors import InvalidInputError
from carlos.files.testing import make_test_lora
from carlos.files.validate import sha256_file
from carlos.store.store import Store

USER = CurrentUser.local("test")  # local mode: anyone identified may write

TRIGGERS = {"a": None, "b": "glowing neon", "c": None}
N_PAIRS = 4  # smoke protocol: 2 prompts x 2 seeds


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    return {
        k: make_test_lora(root / f"{k}.safetensors", seed=30 + i, layout="kohya" if i % 2 else "diffusers") for i, k in enumerate(TRIGGERS)
    }


@pytest.fixture(scope="module")
def reference(loras: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Representations from a single-process worker (made before Ray starts: 2 cores).

    Same chunk size as the Ray runs: images are then made in the same batches and the diffs
    are bit-identical (other batchings differ by float32 noise, up to ~1e-4 on this model).
    """
    store = Store.open(tmp_path_factory.mktemp("ref") / "ref.duckdb")
    worker = jobs.Worker(store, worker_id="reference", chunk_pairs=1)
    out = {}
    for k, path in loras.items():
        sub = jobs.submit(store, path, backend="tiny", protocol="smoke", trigger=TRIGGERS[k], user=USER)
        worker.run_one(job_id=sub.job_id)
        out[sub.lora_id] = store.reps.of(sub.lora_id)[0]
    return out


def crash_once_factory(flag: str, on_call: int):
    """A backend factory whose pipeline kills its process on its ``on_call``-th LoRA
    generation, once per cluster (the flag file), so Ray must restart the actor and retry."""

    def factory(name: str, protocol: str):  # pickled by value: a nested function
        from carlos.characterize import jobs as carlos_jobs

        backend = carlos_jobs.default_backend_factory(name, protocol)
        real, calls = backend.generate, [0]

        def generate(prompts, seeds, **kw):
            if not kw.get("base") and backend.active_lora is not None:
                calls[0] += 1
                if calls[0] == on_call:
                    try:
                        os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    except FileExistsError:
                        pass
                    else:
                        os._exit(1)  # the worker process dies without a word
            return real(prompts, seeds, **kw)

        backend.generate = generate
        return backend

    return factory


def _check_complete(store: Store, job_ids: list[int], reference: dict) -> None:
    for job_id in job_ids:
        job = store.jobs.get(job_id)
        assert job["status"] == "finished" and job["done"] == job["total"] == N_PAIRS, job
        meta, _ = store.jobs.pair_diffs(job_id)
        assert list(meta["pair_index"]) == list(range(N_PAIRS))
        assert len(store.jobs.thumbnails(job_id)) == N_PAIRS
        reps = store.reps.of(job["lora_id"])
        assert len(reps) == 1 and reps[0].provenance["job_id"] == job_id
        got, want = reps[0], reference[job["lora_id"]]
        assert got.embedder == want.embedder and got.n_samples == want.n_samples == N_PAIRS
        assert got.provenance["backend"] == want.provenance["backend"]
        assert got.provenance["trigger"] == want.provenance["trigger"]
        assert got.strength == pytest.approx(want.strength, rel=1e-4)
        assert got.consistency == pytest.approx(want.consistency, rel=1e-4, abs=1e-6)
        np.testing.assert_allclose(got.direction, want.direction, rtol=1e-4, atol=1e-5)
    assert store.table_counts()["pair_results"] == N_PAIRS * len(job_ids)


def test_manifest_formats_and_errors(tmp_path: Path, loras: dict[str, Path], reference, capsys) -> None:
    (tmp_path / "m.csv").write_text(
        '# LoRAs\npath,trigger,name\nx/a.safetensors,,First\n\n/abs/b.safetensors,neon ,\nc.safetensors,"pcut style|paper art, 1girl",\n'
    )
    csv_entries = read_manifest(tmp_path / "m.csv")
    assert [(e.line, e.path, e.triggers, e.name) for e in csv_entries] == [
        (3, tmp_path / "x" / "a.safetensors", (), "First"),
        (5, Path("/abs/b.safetensors"), ("neon",), None),
        (6, tmp_path / "c.safetensors", ("pcut style", "paper art", "1girl"), None),  # words split on | or ,
    ]
    (tmp_path / "m.jsonl").write_text(
        '{"path": "a.safetensors", "trigger": "t", "extra": 1}\n{"path": "b.safetensors", "trigger": ["x y", " z "]}\n'
    )
    entry, listed = read_manifest(tmp_path / "m.jsonl")
    assert entry.path == tmp_path / "a.safetensors" and entry.triggers == ("t",) and entry.name is None
    assert listed.triggers == ("x y", "z")
    bad = {
        "nopath.csv": "file,trigger\na,b\n",
        "broken.jsonl": '{"path": "a"}\n{"path": \n',
        "empty.csv": "# nothing\n",
        "typed.jsonl": '{"path": "a", "name": 3}\n',
        "typed-trigger.jsonl": '{"path": "a", "trigger": 3}\n',
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InvalidInputError, match="path|line 2|no LoRA|must be text"):
            read_manifest(tmp_path / name)
    # without --ray: the same flow in this process; bad files are reported, the rest runs
    (tmp_path / "evil.ckpt").write_bytes(b"\x80\x04fake pickle")
    manifest = tmp_path / "run.jsonl"
    manifest.write_text(f'{{"path": "{loras["a"]}", "name": "My LoRA"}}\n{{"path": "evil.ckpt"}}\n')
    db = tmp_path / "s.duckdb"
    assert main(["--db", str(db), "characterize-many", str(manifest), "--chunk-pairs", "1", "--quiet"]) == 1
    assert "evil.ckpt" in capsys.readouterr().out
    store = Store.open(db)
    (job,) = store.jobs.recent().to_dict("records")
    assert store.loras.get(job["lora_id"])["name"] == "My LoRA"
    _check_complete(store, [int(job["job_id"])], reference)


def test_a_worker_dies_mid_run_and_nothing_is_lost_or_doubled(cluster, loras, reference, tmp_path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    job_ids = [jobs.submit(store, p, trigger=TRIGGERS[k], user=USER).job_id for k, p in loras.items()]
    flag = tmp_path / "crashed"
    seen: list[tuple[int, int]] = []
    report = characterize_on_ray(
        store,
        job_ids,
        config=RayConfig(actors=2, chunk_pairs=1),
        progress=lambda d, t: seen.append((d, t)),
        backend_factory=crash_once_factory(str(flag), on_call=2),
    )
    assert flag.exists() and report.worker_restarts == 1  # one process died and came back
    assert report.actors == 2 and not report.failed and sorted(report.finished) == sorted(job_ids)
    assert report.lora_pairs_computed == N_PAIRS * 3 and report.base_pairs_computed == N_PAIRS
    assert seen[-1] == (12, 12) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    _check_complete(store, job_ids, reference)
    # a second run finds nothing to do
    again = characterize_on_ray(store, job_ids, config=RayConfig(actors=2))
    assert again.actors == 0 and set(again.skipped) == set(job_ids)


class _Stop(Exception):
    pass


def test_a_stopped_driver_resumes_where_it_stopped(cluster, loras, reference, tmp_path, monkeypatch, capsys, caplog) -> None:
    manifest = tmp_path / "loras.csv"
    manifest.write_text("path,trigger\n" + "".join(f"{p},{TRIGGERS[k] or ''}\n" for k, p in loras.items()))
    db = tmp_path / "s.duckdb"
    assert main(["--db", str(db), "characterize-many", str(manifest), "--submit-only"]) == 0
    store = Store.open(db)
    job_ids = sorted(int(j) for j in store.jobs.recent()["job_id"])

    def stop_after_five(done: int, total: int) -> None:
        if done >= 5 and "lost" in caplog.text:  # after the driver has seen the worker go
            raise _Stop

    # The first driver loses a worker for good (no restarts allowed: its chunks go to the
    # other worker), then dies hard after 5 stored pairs: its jobs stay 'running' in its name.
    monkeypatch.setattr(distributed._Driver, "release", lambda self: None)
    config = RayConfig(actors=2, chunk_pairs=1, max_restarts=0, max_task_retries=0)
    with pytest.raises(_Stop):
        characterize_on_ray(
            store,
            job_ids,
            config=config,
            progress=stop_after_five,
            backend_factory=crash_once_factory(str(tmp_path / "crashed"), on_call=1),
        )
    monkeypatch.undo()
    assert (tmp_path / "crashed").exists() and "lost" in caplog.text
    stored = store.table_counts()["pair_results"]
    assert 5 <= stored < N_PAIRS * 3
    assert "running" in set(store.jobs.recent()["status"])
    capsys.readouterr()
    # the rerun (same manifest, same jobs) takes its jobs back at once and does only what is missing
    rc = main(["--db", str(db), "characterize-many", str(manifest), "--ray", "--actors", "1", "--chunk-pairs", "1", "--json", "--quiet"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    run = out["run"]
    assert run["lora_pairs_computed"] == N_PAIRS * 3 - stored and run["base_pairs_computed"] == 0
    assert run["lora_pairs_already_stored"] + N_PAIRS * len(run["skipped"]) == stored
    assert {r["job_id"] for r in out["submitted"]} == set(job_ids) and not out["rejected"]
    _check_complete(store, job_ids, reference)


def test_a_file_changed_after_submit_fails_on_ray_before_any_actor_loads_it(cluster, tmp_path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    sub = jobs.submit(store, make_test_lora(tmp_path / "t.safetensors", seed=40), user=USER)
    stored = store.jobs.get(sub.job_id)["file_path"]
    make_test_lora(stored, seed=41)  # replaced after it was validated
    report = characterize_on_ray(store, [sub.job_id], config=RayConfig(actors=1, chunk_pairs=1))
    expected = sub.lora_id.removeprefix("sha256:")
    why = f"expected sha256 {expected}, got {sha256_file(stored)}"
    assert why in report.failed[sub.job_id] and why in store.jobs.get(sub.job_id)["error"]
    assert store.jobs.get(sub.job_id)["status"] == "failed" and store.jobs.done_pairs(sub.job_id) == set()
    assert report.lora_pairs_computed == 0
