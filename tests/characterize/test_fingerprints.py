"""Every validated upload is fingerprinted before any GPU work, and its weight-space matches carry review status."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from carlos.characterize import fingerprints, jobs
from carlos.core.access import CurrentUser
from carlos.errors import CarlosError, PermissionDeniedError
from carlos.files.testing import make_test_lora
from carlos.review import workflow
from carlos.store.store import Store
from carlos.weights.canonical import READ_LIMITS

USER = CurrentUser.local("test")
BOB = CurrentUser.local("bob@example.org")
TINY = jobs.limits_for("tiny", READ_LIMITS)


def _copy(src: Path, dst: Path, up: float = 0.5, down: float = 2.0) -> Path:
    t = {k: v.astype(np.float32) for k, v in load_file(str(src)).items()}
    save_file({k: (v * up if "lora_up" in k else v * down if "lora_down" in k else v).astype(np.float16) for k, v in t.items()}, str(dst))
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("uploads")
    orig = make_test_lora(d / "orig.safetensors", seed=11)
    return {
        "orig": orig,
        "copy": _copy(orig, d / "copy.safetensors"),
        "double": _copy(orig, d / "double.safetensors", up=2.0, down=1.0),
        "other": make_test_lora(d / "other.safetensors", seed=12),
    }


def test_uploads_are_fingerprinted_and_copies_matched_with_the_originals_decision(
    files: dict[str, Path], empty_store: Store, tmp_path: Path
) -> None:
    store = empty_store
    up = tmp_path / "up"
    a = jobs.submit(store, files["orig"], backend="tiny", protocol="smoke", uploads_dir=up, user=USER)
    row = store.fingerprints.get(a.lora_id)
    assert row is not None and row["file_path"] == str((up / f"{a.report.sha256}.safetensors").resolve())
    assert row["file_name"] == "orig.safetensors" and len(row["module_names"]) == 168
    workflow.claim(store, a.lora_id, BOB)
    workflow.decide(store, a.lora_id, BOB, "flag", "banned style")
    b = jobs.submit(
        store, files["copy"], backend="tiny", protocol="smoke", uploads_dir=up, user=USER, original_name="re-upload.safetensors"
    )
    assert b.lora_id != a.lora_id  # other bytes: sha256 does not catch it
    (match,) = fingerprints.weight_matches(store, b.lora_id)
    assert (match.lora_id, match.label, match.exact, match.status, match.reviewer) == (
        a.lora_id,
        "identical",
        True,
        "flagged",
        "bob@example.org",
    )
    assert match.text.startswith("same weights as orig, flagged by bob@example.org on 20") and match.cosine >= 0.999
    back = fingerprints.weight_matches(store, a.lora_id)
    assert [(m.lora_id, m.label, m.status) for m in back] == [(b.lora_id, "identical", "unreviewed")]
    jobs.submit(store, files["double"], backend="tiny", protocol="smoke", uploads_dir=up, user=USER)
    labels = {m.label for m in fingerprints.weight_matches(store, a.lora_id)}
    assert labels == {"identical", "rescaled copy"}


def test_a_file_is_matched_before_anything_is_stored(files: dict[str, Path], empty_store: Store, tmp_path: Path) -> None:
    store = empty_store
    jobs.submit(store, files["orig"], backend="tiny", protocol="smoke", uploads_dir=tmp_path, user=USER)
    n = store.fingerprints.count()
    fp, matches = fingerprints.match_file(store, files["copy"], limits=TINY)
    assert store.fingerprints.count() == n and fp.sha256 is not None
    assert [m.label for m in matches] == ["identical"] and matches[0].status == "unreviewed"
    _, unrelated = fingerprints.match_file(store, files["other"], limits=TINY)
    assert [m.label for m in unrelated] == ["unrelated"] and abs(unrelated[0].cosine) < 0.3
    report = jobs.inspect_upload(files["copy"], "copy.safetensors", "tiny")
    named, note = fingerprints.upload_matches(store, files["copy"], report, limits=TINY)  # the validation report's list
    assert [m.label for m in named] == ["identical"] and note is None and store.fingerprints.count() == n
    assert fingerprints.upload_matches(
        store, files["other"], jobs.inspect_upload(files["other"], "o.safetensors", "tiny"), limits=TINY
    ) == ([], None)


def test_fingerprinting_is_a_checked_write_and_never_blocks_an_upload(
    files: dict[str, Path], empty_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARLOS_REVIEWERS", "alice@example.org")
    with pytest.raises(PermissionDeniedError):
        fingerprints.register(empty_store, files["orig"], user=BOB, limits=TINY)
    assert empty_store.fingerprints.count() == 0
    monkeypatch.delenv("CARLOS_REVIEWERS")

    def broken(*args: object, **kwargs: object) -> None:
        raise CarlosError("simulated failure")

    monkeypatch.setattr(fingerprints, "register", broken)
    sub = jobs.submit(empty_store, files["other"], backend="tiny", protocol="smoke", uploads_dir=tmp_path, user=USER)
    assert empty_store.jobs.get(sub.job_id)["status"] == "queued" and empty_store.fingerprints.count() == 0
