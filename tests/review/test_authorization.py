"""Issue 14: every write of the library checks the acting user before it writes anything.

Each service is called directly, the way a page, the CLI or any other caller would, as a
logged-in user outside the reviewer list (who even claims ``can_write=True``) and as a
visitor who is not logged in: PermissionDeniedError naming the user and the action, and the
store exactly as before (audit log, claims, thresholds, jobs, LoRAs, stored uploads). The same
calls as a listed reviewer work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from carlos.characterize import jobs
from carlos.config import Thresholds
from carlos.errors import PermissionDeniedError
from carlos.files.testing import make_test_lora
from carlos.review import workflow as review
from carlos.review.access import CurrentUser
from carlos.review.audit import audit_log
from carlos.store.store import Store

PIXEL = "civitai:130580"
OTHER = "civitai:160844"


@pytest.fixture
def users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, CurrentUser]:
    """A secrets.toml listing alice and bob; mallory is logged in but unlisted."""
    monkeypatch.delenv("CARLOS_REVIEWERS", raising=False)
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[auth]\nclient_id = "x"\n\n[carlos]\nreviewers = ["alice@example.org", "bob@example.org"]\n')
    files = (str(secrets),)
    return {
        "alice": CurrentUser("alice@example.org", True, "", "oidc", True, files),
        "bob": CurrentUser("bob@example.org", True, "", "oidc", True, files),
        "mallory": CurrentUser("mallory@example.org", True, "", "oidc", True, files),  # can_write is not trusted
        "anonymous": CurrentUser("", False, "log in", "oidc", False, files),
        "stale": CurrentUser("alice@example.org", True, "", "oidc", False, files),  # a listed name without a login
    }


def snapshot(store: Store, uploads: Path) -> dict[str, Any]:
    """Everything a write could change."""
    return {  # as JSON text: NaN compares equal to itself there
        "tables": store.table_counts(),
        "audit": audit_log(store).to_json(date_format="iso"),
        "statuses": store.review.current_statuses().sort_values("lora_id").to_json(date_format="iso"),
        "thresholds": store.review.threshold_history(limit=None).to_json(date_format="iso"),
        "jobs": store.jobs.recent().to_json(date_format="iso"),
        "uploads": sorted(p.name for p in uploads.rglob("*")) if uploads.exists() else [],
    }


def _writes(store: Store, lora: Path, uploads: Path, queued_job: int) -> dict[str, Any]:
    """Every write of the library, as a function of the acting user."""
    return {
        "claim": lambda u: review.claim(store, PIXEL, u),
        "release": lambda u: review.release(store, OTHER, u),
        "decide": lambda u: review.decide(store, OTHER, u, "flag", "forced"),
        "decide without claim": lambda u: review.decide(store, PIXEL, u, "approve", require_claim=False),
        "bulk flag": lambda u: review.bulk_flag(store, [PIXEL, "130580", "civitai:503382"], u, "forced"),
        "save thresholds": lambda u: review.set_thresholds(store, Thresholds(1.0, 0.5), u, "forced"),
        "upload": lambda u: jobs.submit(store, lora, user=u, backend="tiny", protocol="smoke", uploads_dir=uploads / "new"),
        "cancel job": lambda u: jobs.cancel(store, queued_job, u),
    }


@pytest.mark.parametrize("who", ["mallory", "anonymous", "stale"])
def test_no_write_of_an_unlisted_or_logged_out_user_reaches_the_store(store_copy: Store, tmp_path: Path, users, who: str) -> None:
    lora = make_test_lora(tmp_path / "demo.safetensors", seed=5)
    uploads = tmp_path / "uploads"
    # the state a forced write would change: a claim by a reviewer and a queued job
    review.claim(store_copy, OTHER, users["alice"])
    job = jobs.submit(store_copy, make_test_lora(tmp_path / "queued.safetensors", seed=6), user=users["alice"], uploads_dir=uploads).job_id
    before = snapshot(store_copy, uploads)
    user = users[who]
    name = {"mallory": "mallory@example.org", "anonymous": "a visitor who is not logged in", "stale": "alice@example.org (not logged in)"}[
        who
    ]
    for action, write in _writes(store_copy, lora, uploads, job).items():
        with pytest.raises(PermissionDeniedError) as e:
            write(user)
        assert str(e.value).startswith(f"{name} may not "), (action, str(e.value))
        assert snapshot(store_copy, uploads) == before, f"{action} by {who} changed the store"
    assert store_copy.jobs.get(job)["status"] == "queued"


def test_a_listed_reviewer_can_do_each_of_them(store_copy: Store, tmp_path: Path, users) -> None:
    alice, bob = users["alice"], users["bob"]
    uploads = tmp_path / "uploads"
    review.claim(store_copy, PIXEL, alice)
    assert review.claim_holder(store_copy, PIXEL) == "alice@example.org"
    with pytest.raises(PermissionDeniedError, match="only they may release it"):
        review.release(store_copy, PIXEL, bob)  # another reviewer's claim
    assert review.release(store_copy, PIXEL, alice) and review.claim_holder(store_copy, PIXEL) is None
    assert not review.release(store_copy, PIXEL, alice)  # nothing left to release
    review.claim(store_copy, PIXEL, alice)
    assert review.release(store_copy, PIXEL, bob, force=True)  # a reviewer who left: released, and logged as such
    review.claim(store_copy, PIXEL, bob)
    review.decide(store_copy, PIXEL, bob, "flag", "pixel style")
    assert review.status_of(store_copy, PIXEL) == "flagged"
    res = review.bulk_flag(store_copy, [PIXEL, OTHER], alice, "corner")
    assert res == {"flagged": [OTHER], "skipped": [(PIXEL, "already flagged")]}
    review.set_thresholds(store_copy, Thresholds(9.0, None), alice, "stricter")
    assert review.current_thresholds(store_copy) == Thresholds(9.0, None)
    sub = jobs.submit(store_copy, make_test_lora(tmp_path / "d.safetensors", seed=7), user=bob, uploads_dir=uploads)
    assert store_copy.jobs.get(sub.job_id)["requested_by"] == "bob@example.org"
    assert any(uploads.iterdir())
    assert jobs.cancel(store_copy, sub.job_id, alice) and store_copy.jobs.get(sub.job_id)["status"] == "cancelled"
    log = audit_log(store_copy)
    assert list(zip(log["event"], log["reviewer"]))[::-1] == [
        ("claim", "alice@example.org"),
        ("release", "alice@example.org"),
        ("claim", "alice@example.org"),
        ("release", "bob@example.org"),
        ("claim", "bob@example.org"),
        ("decision", "bob@example.org"),
        ("decision", "alice@example.org"),
        ("thresholds", "alice@example.org"),
    ]
    forced = log[(log["event"] == "release") & (log["reviewer"] == "bob@example.org")].iloc[0]
    assert forced["note"] == "released the claim of alice@example.org"


def test_a_user_removed_from_the_list_loses_write_access_at_once(store_copy: Store, tmp_path: Path, users) -> None:
    """The list is read at every write: no session keeps a right the file no longer gives."""
    alice = users["alice"]
    review.claim(store_copy, PIXEL, alice)
    Path(alice.secrets_files[0]).write_text('[carlos]\nreviewers = ["bob@example.org"]\n')
    with pytest.raises(PermissionDeniedError, match="alice@example.org may not record a decision"):
        review.decide(store_copy, PIXEL, alice, "approve")
    assert review.history(store_copy).empty and review.claim_holder(store_copy, PIXEL) == "alice@example.org"
