"""``python -m carlos review``: claim, release, decide, log and export, checked against the same
reviewer list as the dashboard; an unlisted identity exits with 3 and writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from carlos.cli.main import main
from carlos.config import REPO_ROOT
from carlos.store.store import Store

PIXEL = "civitai:130580"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def db(store_copy: Store, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CARLOS_REVIEWERS", "alice@example.org")
    monkeypatch.delenv("CARLOS_REVIEWER", raising=False)
    return str(store_copy.path)


def log_of(capsys: pytest.CaptureFixture[str], db: str, *extra: str) -> list[dict]:
    code, out, _ = run_cli(capsys, "--db", db, "review", "log", "--json", *extra)
    assert code == 0
    return json.loads(out)


def test_the_issue_check_through_python_m_carlos(store_copy: Store) -> None:
    """The exact commands of issue 14, as a user types them."""
    env = {k: v for k, v in os.environ.items() if k not in ("CARLOS_REVIEWER", "CARLOS_REVIEWERS")}
    env.update(CARLOS_DB=str(store_copy.path))

    def carlos(*argv: str, reviewers: str | None = None) -> subprocess.CompletedProcess:
        e = env if reviewers is None else {**env, "CARLOS_REVIEWERS": reviewers}
        return subprocess.run([sys.executable, "-m", "carlos", *argv], cwd=REPO_ROOT, env=e, capture_output=True, text=True, timeout=120)

    refused = carlos("review", "decide", "130580", "--decision", "flag", "--reviewer", "mallory@example.org", reviewers="alice@example.org")
    assert refused.returncode == 3 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        "error: mallory@example.org may not record a decision on 130580: not a listed reviewer ($CARLOS_REVIEWERS)"
    ]
    assert json.loads(carlos("review", "log", "--json").stdout) == []
    assert carlos("review", "claim", "130580", "--reviewer", "alice@example.org", reviewers="alice@example.org").returncode == 0
    ok = carlos("review", "decide", "130580", "--decision", "flag", "--reviewer", "alice@example.org", reviewers="alice@example.org")
    assert ok.returncode == 0, ok.stderr
    log = json.loads(carlos("review", "log", "--json").stdout)
    assert [(r["event"], r["reviewer"], r["lora_id"], r["action"]) for r in log] == [
        ("decision", "alice@example.org", PIXEL, "flag"),
        ("claim", "alice@example.org", PIXEL, "claim"),
    ]


def test_unlisted_identity_writes_nothing_with_any_command(db: str, capsys, monkeypatch) -> None:
    for argv in (
        ["claim", "130580"],
        ["release", "130580"],
        ["decide", "130580", "--decision", "approve", "--no-claim"],
    ):
        code, out, err = run_cli(capsys, "--db", db, "review", *argv, "--reviewer", "mallory@example.org", "--json")
        assert code == 3 and out == "", argv
        assert len(err.strip().splitlines()) == 1 and "mallory@example.org may not" in err, err
    # without --reviewer the identity is $CARLOS_REVIEWER (here: not listed either)
    monkeypatch.setenv("CARLOS_REVIEWER", "eve@example.org")
    code, _, err = run_cli(capsys, "--db", db, "review", "claim", PIXEL)
    assert code == 3 and err.startswith("error: eve@example.org may not claim")
    assert log_of(capsys, db) == []


def test_claim_release_decide_and_someone_elses_claim(db: str, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CARLOS_REVIEWERS", "alice@example.org,bob@example.org")
    alice, bob = ("--reviewer", "alice@example.org"), ("--reviewer", "bob@example.org")
    code, out, _ = run_cli(capsys, "--db", db, "review", "claim", "130580", *alice, "--json")
    assert code == 0 and json.loads(out) == {"lora_id": PIXEL, "claimed_by": "alice@example.org"}
    code, _, err = run_cli(capsys, "--db", db, "review", "decide", PIXEL, "--decision", "flag", *bob)
    assert code == 3 and "claimed by alice@example.org" in err
    code, _, err = run_cli(capsys, "--db", db, "review", "release", PIXEL, *bob)
    assert code == 3 and "only they may release it" in err
    code, out, _ = run_cli(capsys, "--db", db, "review", "release", PIXEL, *alice, "--json")
    assert code == 0 and json.loads(out)["released"] is True
    code, out, _ = run_cli(capsys, "--db", db, "review", "release", PIXEL, *alice)
    assert code == 0 and "nothing to release" in out
    run_cli(capsys, "--db", db, "review", "claim", PIXEL, *bob)
    code, out, _ = run_cli(capsys, "--db", db, "review", "decide", PIXEL, "--decision", "escalate", "--note", "ask legal", *bob, "--json")
    assert code == 0 and json.loads(out)["status"] == "escalated"
    log = log_of(capsys, db, "--lora", "130580")
    assert [(r["event"], r["reviewer"]) for r in log] == [
        ("decision", "bob@example.org"),
        ("claim", "bob@example.org"),
        ("release", "alice@example.org"),
        ("claim", "alice@example.org"),
    ]
    assert log[0]["note"] == "ask legal" and log[0]["status_before"] == "unreviewed"
    code, out, _ = run_cli(capsys, "--db", db, "review", "log")
    assert code == 0 and "ask legal" in out and "unreviewed → escalated" in out


def test_the_reviewer_list_of_a_secrets_file_and_local_mode(db: str, capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CARLOS_REVIEWERS")
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[carlos]\nreviewers = ["carol@example.org"]\n')
    listed = ("--secrets", str(secrets))
    code, _, err = run_cli(capsys, "--db", db, "review", "claim", PIXEL, "--reviewer", "alice@example.org", *listed)
    assert code == 3 and f"[carlos] reviewers in {secrets}" in err
    assert run_cli(capsys, "--db", db, "review", "claim", PIXEL, "--reviewer", "carol@example.org", *listed)[0] == 0
    code, _, err = run_cli(capsys, "--db", db, "review", "claim", PIXEL, "--secrets", str(tmp_path / "absent.toml"))
    assert code == 2 and "no such file" in err
    secrets.write_text("[carlos\n")  # unreadable: nobody writes
    code, _, err = run_cli(capsys, "--db", db, "review", "release", PIXEL, "--reviewer", "carol@example.org", *listed)
    assert code == 3 and "cannot be read" in err
    # local mode (an empty secrets file, no list): the default identity is $CARLOS_REVIEWER
    secrets.write_text("")
    monkeypatch.setenv("CARLOS_REVIEWER", "dave")
    code, _, err = run_cli(capsys, "--db", db, "review", "decide", "civitai:160844", "--decision", "approve", "--no-claim", *listed)
    assert code == 0, err
    assert log_of(capsys, db, "--limit", "1")[0]["reviewer"] == "dave"


def test_export_writes_the_whole_log(db: str, capsys, tmp_path: Path) -> None:
    alice = ("--reviewer", "alice@example.org")
    run_cli(capsys, "--db", db, "review", "claim", PIXEL, *alice)
    run_cli(capsys, "--db", db, "review", "decide", PIXEL, "--decision", "flag", "--note", "@SUM(A1)", *alice)
    for fmt in ("csv", "json", "parquet"):
        out_path = tmp_path / f"log.{fmt}"
        code, out, _ = run_cli(capsys, "--db", db, "review", "export", "--format", fmt, "-o", str(out_path), "--json")
        assert code == 0 and json.loads(out)["events"] == 2 and out_path.is_file()
    assert list(pd.read_csv(tmp_path / "log.csv")["note"].fillna("")) == ["'@SUM(A1)", ""]
    assert [r["event"] for r in json.loads((tmp_path / "log.json").read_text())] == ["decision", "claim"]
    assert len(pd.read_parquet(tmp_path / "log.parquet")) == 2
    assert not list(tmp_path.glob("*.part"))


def test_uploads_and_job_cancels_need_a_listed_identity_too(db: str, capsys, tmp_path: Path) -> None:
    from carlos.characterize import jobs
    from carlos.files.testing import make_test_lora
    from carlos.review.access import CurrentUser

    lora = make_test_lora(tmp_path / "demo.safetensors", seed=3)
    code, out, err = run_cli(capsys, "--db", db, "characterize", str(lora), "--reviewer", "mallory@example.org", "--quiet", "--json")
    assert code == 3 and out == "" and "mallory@example.org may not upload a LoRA" in err
    store = Store.open(Path(db))
    assert store.jobs.recent().empty and store.loras.find_by_sha256(jobs.validate_upload(lora, None, "tiny").sha256) is None
    job = jobs.submit(store, lora, user=CurrentUser.local("alice@example.org")).job_id
    code, _, err = run_cli(capsys, "--db", db, "jobs", "--cancel", str(job), "--reviewer", "mallory@example.org")
    assert code == 3 and f"may not cancel job {job}" in err and store.jobs.get(job)["status"] == "queued"
    code, out, _ = run_cli(capsys, "--db", db, "jobs", "--cancel", str(job), "--reviewer", "alice@example.org")
    assert code == 0 and store.jobs.get(job)["status"] == "cancelled"
    code, _, err = run_cli(capsys, "--db", db, "review", "export", "-o", str(tmp_path / "no" / "such" / "dir.csv"))
    assert code == 2 and "cannot write the audit log" in err
