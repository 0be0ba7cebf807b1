"""Job safety: bad uploads leave the store unchanged; a killed worker resumes exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from carlos.characterize import jobs
from carlos.core.access import CurrentUser
from carlos.errors import InvalidLoRAFileError, StoreUnavailableError, UnsupportedBaseModelError
from carlos.files.testing import make_test_lora
from carlos.store.store import Store

USER = CurrentUser.local("test")  # local mode: anyone identified may write


def _sd15_lora(path: Path) -> None:
    from safetensors.numpy import save_file

    z = np.zeros
    save_file(
        {
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": z((4, 768), np.float16),
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": z((320, 4), np.float16),
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": z((4, 768), np.float16),
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": z((768, 4), np.float16),
        },
        str(path),
        metadata={"ss_base_model_version": "sdxl_base_v1-0"},
    )


def _poisoned_lora(value: float):
    def write(path: Path) -> None:
        make_test_lora(path, seed=1)
        from safetensors.numpy import load_file, save_file

        tensors = load_file(str(path))
        key = next(iter(tensors))
        tensors[key] = tensors[key].copy()
        tensors[key].flat[0] = value
        save_file(tensors, str(path))

    return write


def _flux_lora(path: Path) -> None:
    from safetensors.numpy import save_file

    z = np.zeros
    save_file(
        {
            "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": z((4, 3072), np.float16),
            "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": z((3072, 4), np.float16),
        },
        str(path),
    )


def _header_beyond_file(path: Path) -> None:
    path.write_bytes((10_000).to_bytes(8, "little") + b'{"a": 1}')


BAD_FILES = {
    "pickle.ckpt": (lambda p: p.write_bytes(b"\x80\x04\x95fake pickle"), InvalidLoRAFileError, "pickle"),
    "disguised.safetensors": (lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 64), InvalidLoRAFileError, "zip"),
    "truncated.safetensors": (lambda p: p.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a'), InvalidLoRAFileError, ""),
    "empty.safetensors": (lambda p: p.write_bytes(b""), InvalidLoRAFileError, "empty"),
    "nan.safetensors": (_poisoned_lora(np.nan), InvalidLoRAFileError, "NaN"),
    "inf.safetensors": (_poisoned_lora(np.inf), InvalidLoRAFileError, "inf"),
    "flux.safetensors": (_flux_lora, UnsupportedBaseModelError, "Flux"),
    "header.safetensors": (_header_beyond_file, InvalidLoRAFileError, "header"),
    "sd15.safetensors": (_sd15_lora, UnsupportedBaseModelError, "SD 1.5"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_uploads_are_refused_and_the_store_is_unchanged(tmp_path: Path, name: str) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    before = store.table_counts()
    write, error, words = BAD_FILES[name]
    path = tmp_path / name
    write(path)
    with pytest.raises(error) as info:
        jobs.submit(store, path, backend="tiny", protocol="smoke", uploads_dir=tmp_path / "up", user=USER)
    assert words.lower() in str(info.value).lower()
    assert store.table_counts() == before
    assert not (tmp_path / "up").exists() or not any((tmp_path / "up").iterdir())


def test_oversized_upload_is_refused(tmp_path: Path) -> None:
    from carlos.files.validate import LoRAFileLimits

    store = Store.open(tmp_path / "s.duckdb")
    path = tmp_path / "big.safetensors"
    make_test_lora(path, seed=1)
    with pytest.raises(InvalidLoRAFileError, match="(?i)size|large|limit"):
        jobs.submit(store, path, limits=LoRAFileLimits(max_file_bytes=1024), user=USER)
    assert store.table_counts()["jobs"] == 0


def _worker_cmd(db: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "carlos", "--db", str(db), "worker", "--once", "--poll", "0.1", "--chunk-pairs", "1", *extra]


def test_killed_worker_resumes_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    lora = tmp_path / "l.safetensors"
    make_test_lora(lora, seed=11)
    # uninterrupted reference (in this process, with the worker command's chunks of one pair)
    ref_store = Store.open(tmp_path / "ref.duckdb")
    ref = jobs.submit(ref_store, lora, backend="tiny", protocol="smoke", user=USER)
    jobs.Worker(ref_store, chunk_pairs=1).run_one(job_id=ref.job_id)
    expected = ref_store.reps.of(ref.lora_id)[0]

    store = Store.open(tmp_path / "s.duckdb")
    sub = jobs.submit(store, lora, backend="tiny", protocol="smoke", user=USER)
    proc = subprocess.Popen(_worker_cmd(store.path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while store.jobs.get(sub.job_id)["done"] < 1:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "worker made no progress"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    job = store.jobs.get(sub.job_id)
    assert job["status"] == "running" and 1 <= job["done"] < job["total"], job
    done_before = job["done"]
    # a restarted worker takes over the silent job and does only the missing pairs
    out = subprocess.run(_worker_cmd(store.path, "--stale-after", "0"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    job = store.jobs.get(sub.job_id)
    assert job["status"] == "finished" and job["done"] == job["total"] == 4
    meta, diffs = store.jobs.pair_diffs(sub.job_id)
    assert sorted(meta["pair_index"]) == [0, 1, 2, 3]  # nothing lost, nothing twice
    got = store.reps.of(sub.lora_id)[0]
    assert len(store.reps.of(sub.lora_id)) == 1
    assert got.strength == pytest.approx(expected.strength, rel=1e-4)
    assert got.consistency == pytest.approx(expected.consistency, rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(got.direction, expected.direction, rtol=1e-4, atol=1e-5)
    assert done_before < 4


def test_a_store_outage_mid_job_is_waited_for_and_the_job_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    lora = tmp_path / "l.safetensors"
    make_test_lora(lora, seed=4)
    sub = jobs.submit(store, lora, backend="tiny", protocol="smoke", user=USER)
    real, calls = store.jobs.add_pair_results, []

    def flaky(job_id: int, rows: Any) -> int:  # the second chunk meets a store that is down (a PostgreSQL restart)
        calls.append(len(rows))
        if len(calls) == 2:
            raise StoreUnavailableError("the PostgreSQL store postgresql://db/carlos is unreachable: server closed the connection")
        return real(job_id, rows)

    monkeypatch.setattr(store.jobs, "add_pair_results", flaky)
    worker = jobs.Worker(store, chunk_pairs=1, stale_after_s=3600)  # its own job is resumed, not left for a takeover
    assert worker.run(once=True, poll_s=0.01) == 1
    job = store.jobs.get(sub.job_id)
    assert job["status"] == "finished" and job["done"] == job["total"] == 4 and job["error"] is None
    meta, _ = store.jobs.pair_diffs(sub.job_id)
    assert sorted(meta["pair_index"]) == [0, 1, 2, 3] and len(store.reps.of(sub.lora_id)) == 1
