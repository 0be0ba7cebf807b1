"""A GPU host anywhere: a job queued through the dashboard's service layer (as the Characterize page
queues it) on a PostgreSQL team store, its file in S3-compatible storage (a real SeaweedFS), is
finished by a worker process that shares nothing with the dashboard but the two URLs (its own working
folder, the dashboard's files deleted), and the result shows on the detail page."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from carlos.characterize import jobs
from carlos.config import REPO_ROOT
from carlos.core.access import CurrentUser
from carlos.data.corpus import import_parquet
from carlos.files.blobs import open_blobs
from carlos.files.testing import make_test_lora
from carlos.serving.s3 import local_s3
from carlos.store.store import Store


def test_a_worker_elsewhere_finishes_a_dashboard_job(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corpus_parquet: Path
) -> None:
    with local_s3(tmp_path / "seaweedfs") as s3:
        blobs_url = f"s3://{s3.bucket}/uploads?endpoint={s3.endpoint}"
        credentials = {"AWS_ACCESS_KEY_ID": s3.access_key_id, "AWS_SECRET_ACCESS_KEY": s3.secret_access_key}
        for k, v in credentials.items():
            monkeypatch.setenv(k, v)
        dashboard = tmp_path / "dashboard"
        store = Store.open(pg_url)
        import_parquet(store, corpus_parquet)  # the team's corpus, as `corpus import` leaves it
        upload = make_test_lora(dashboard / "upload.safetensors", seed=7)
        sub = jobs.submit(
            store, upload, protocol="smoke", user=CurrentUser.local("ada"), blobs=open_blobs(blobs_url, cache=dashboard / "cache")
        )
        shutil.rmtree(dashboard)  # nothing of the dashboard's machine is left to read
        host = tmp_path / "gpu-host"
        host.mkdir()
        env = {"PATH": os.environ["PATH"], "HOME": str(host), "PYTHONPATH": str(REPO_ROOT), **credentials}
        command = [
            sys.executable,
            "-m",
            "carlos",
            "--store",
            pg_url,
            "worker",
            "--once",
            "--blobs",
            blobs_url,
            "--cache-dir",
            str(host / "cache"),
        ]
        done = subprocess.run(command, cwd=host, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        job = store.jobs.get(sub.job_id)
        assert job["status"] == "finished" and job["done"] == job["total"] == 4, job
        assert (host / "cache" / "blobs" / f"{sub.lora_id.removeprefix('sha256:')}.safetensors").is_file()
        rep = store.reps.of(sub.lora_id)[0]
        assert rep.provenance["job_id"] == sub.job_id and rep.n_samples == 4

    monkeypatch.setenv("CARLOS_STORE", pg_url)
    monkeypatch.setenv("CARLOS_REVIEWER", "ada")
    at = AppTest.from_file(str(REPO_ROOT / "streamlit_app.py"), default_timeout=120).run()
    at.query_params.update({"lora": sub.lora_id})
    at = at.switch_page("pages/detail.py").run()
    assert not at.exception, at.exception
    assert not at.error and [t.value for t in at.title] == [store.loras.get(sub.lora_id)["name"]]
    shown = next(t.value for t in at.dataframe if "Strength" in t.value.columns)  # the representations table
    assert list(shown["space"]) == [rep.embedder] and float(shown["Strength"].iloc[0]) == pytest.approx(rep.strength, rel=1e-3)
    assert int(shown["pairs"].iloc[0]) == 4
