"""Uploads in a blob store (carlos/files/blobs.py): a local folder and real S3-compatible storage
(SeaweedFS started by the test); every read re-verified by sha256; a corrupted or missing object is
refused with the reason, and a job on it fails with that reason."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from carlos.characterize import jobs
from carlos.core.access import CurrentUser
from carlos.errors import InvalidInputError, InvalidLoRAFileError, StoreUnavailableError
from carlos.files.blobs import LocalBlobs, S3Blobs, local_copy, open_blobs
from carlos.files.testing import make_test_lora
from carlos.serving.s3 import LocalS3, local_s3
from carlos.store.store import Store

USER = CurrentUser.local("test")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    with local_s3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_env(s3: LocalS3, monkeypatch: pytest.MonkeyPatch) -> str:
    """The blob store URL a worker would be given, its credentials in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_access_key)
    url = f"s3://{s3.bucket}/uploads?endpoint={s3.endpoint}"
    monkeypatch.setenv("CARLOS_BLOBS", url)
    return url


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _client(s3: LocalS3):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        region_name="us-east-1",
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
    )


def test_a_folder_keeps_uploads_by_content_and_checks_them(tmp_path: Path) -> None:
    lora = make_test_lora(tmp_path / "a.safetensors", seed=1)
    blobs = open_blobs(None, cache=tmp_path / "cache")
    assert isinstance(blobs, LocalBlobs) and blobs.root == tmp_path / "cache" / "uploads"
    ref = blobs.put(lora, _sha(lora))
    assert ref == str(tmp_path / "cache" / "uploads" / f"{_sha(lora)}.safetensors") and blobs.put(lora, _sha(lora)) == ref
    assert blobs.local(ref, _sha(lora)) == Path(ref)
    Path(ref).write_bytes(b"not the upload")
    with pytest.raises(InvalidLoRAFileError, match=f"expected sha256 {_sha(lora)}"):
        blobs.local(ref, _sha(lora))
    with pytest.raises(InvalidLoRAFileError, match="missing on this machine"):
        blobs.local(str(tmp_path / "gone.safetensors"), _sha(lora))


def test_s3_round_trip_cache_corruption_and_absence(s3: LocalS3, s3_env: str, tmp_path: Path) -> None:
    lora = make_test_lora(tmp_path / "b.safetensors", seed=2)
    sha = _sha(lora)
    blobs = open_blobs(s3_env, cache=tmp_path / "worker-cache")
    assert isinstance(blobs, S3Blobs) and s3.secret_access_key not in blobs.where() and s3.access_key_id not in blobs.where()
    ref = blobs.put(lora, sha)
    assert ref == f"s3://{s3.bucket}/uploads/{sha}.safetensors" and blobs.put(lora, sha) == ref  # content-addressed
    got = blobs.local(ref, sha)
    assert got.read_bytes() == lora.read_bytes() and got.parent == tmp_path / "worker-cache" / "blobs"
    # a reference alone finds the file through the configured blob store (CARLOS_BLOBS: what a remote worker has)
    assert local_copy(ref, sha, None, cache=tmp_path / "other-cache").read_bytes() == lora.read_bytes()
    # the object replaced in the bucket: refused (the verified cached copy is re-checked and kept)
    _client(s3).put_object(Bucket=s3.bucket, Key=f"uploads/{sha}.safetensors", Body=b"tampered")
    assert blobs.local(ref, sha).read_bytes() == lora.read_bytes()
    with pytest.raises(InvalidLoRAFileError, match=f"expected sha256 {sha}"):
        open_blobs(s3_env, cache=tmp_path / "fresh-cache").local(ref, sha)
    assert not list((tmp_path / "fresh-cache" / "blobs").glob("*"))  # nothing half-fetched or wrong stays
    with pytest.raises(InvalidLoRAFileError, match="missing from the blob store"):
        blobs.local(f"s3://{s3.bucket}/uploads/{'0' * 64}.safetensors", "0" * 64)
    with pytest.raises(InvalidInputError, match="not a blob reference"):
        blobs.local(f"s3://{s3.bucket}/uploads/../etc/passwd", sha)


def test_wrong_credentials_are_a_clear_error_without_them(s3: LocalS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-123")
    lora = make_test_lora(tmp_path / "c.safetensors", seed=3)
    with pytest.raises(StoreUnavailableError) as err:
        open_blobs(f"s3://{s3.bucket}?endpoint={s3.endpoint}", cache=tmp_path).put(lora, _sha(lora))
    assert "wrong-secret-123" not in str(err.value) and s3.endpoint in str(err.value)
    with pytest.raises(InvalidInputError, match="no credentials"):
        open_blobs(f"s3://key:secret@{s3.bucket}", cache=tmp_path)


def test_a_job_on_a_corrupted_object_fails_with_the_reason(s3: LocalS3, s3_env: str, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    blobs = open_blobs(s3_env, cache=tmp_path / "dashboard-cache")
    lora = make_test_lora(tmp_path / "d.safetensors", seed=4)
    sub = jobs.submit(store, lora, protocol="smoke", user=USER, blobs=blobs)
    ref = store.jobs.get(sub.job_id)["file_path"]
    assert ref.startswith(f"s3://{s3.bucket}/uploads/")
    _client(s3).put_object(Bucket=s3.bucket, Key=ref.split(f"s3://{s3.bucket}/", 1)[1], Body=b"tampered")
    worker = jobs.Worker(store, worker_id="remote", blobs=open_blobs(s3_env, cache=tmp_path / "worker-cache"))
    worker.run_one(job_id=sub.job_id)
    job = store.jobs.get(sub.job_id)
    assert job["status"] == "failed" and f"expected sha256 {sub.lora_id.removeprefix('sha256:')}" in job["error"]
    assert store.jobs.done_pairs(sub.job_id) == set()
