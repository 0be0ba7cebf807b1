"""Review workflow: claims, append-only decisions, thresholds, queue, exports, access."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from carlos.config import Thresholds
from carlos.errors import InvalidInputError, PermissionDeniedError
from carlos.review import workflow as review
from carlos.review.access import AccessPolicy, CurrentUser
from carlos.store.catalog import load_view
from carlos.store.store import Store

PIXEL = "civitai:130580"
# local mode (no secrets files read, no $CARLOS_REVIEWERS): anyone identified may write
ALICE, BOB, CAROL = (CurrentUser.local(n, secrets_files=()) for n in ("alice", "bob", "carol"))


@pytest.fixture(autouse=True)
def _local_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARLOS_REVIEWERS", raising=False)


def test_claim_then_decide_records_before_and_after(store_copy: Store) -> None:
    review.claim(store_copy, PIXEL, ALICE)
    with pytest.raises(PermissionDeniedError, match="claimed by alice"):
        review.claim(store_copy, PIXEL, BOB)
    with pytest.raises(PermissionDeniedError, match="claimed by alice"):
        review.decide(store_copy, PIXEL, BOB, "approve")
    review.decide(store_copy, PIXEL, ALICE, "flag", "looks like a known artist")
    assert store_copy.review.claim_holder(PIXEL) is None  # released by the decision
    review.claim(store_copy, PIXEL, BOB)
    review.decide(store_copy, PIXEL, BOB, "escalate")
    log = store_copy.review.decisions(PIXEL)
    assert list(log["action"]) == ["escalate", "flag"]
    assert list(zip(log["status_before"], log["status_after"])) == [
        ("flagged", "escalated"),
        ("unreviewed", "flagged"),
    ]
    assert review.status_of(store_copy, PIXEL) == "escalated"


def test_decision_needs_claim_and_valid_input(store_copy: Store) -> None:
    with pytest.raises(PermissionDeniedError, match="claim"):
        review.decide(store_copy, PIXEL, ALICE, "approve")
    with pytest.raises(InvalidInputError, match="unknown action"):
        review.decide(store_copy, PIXEL, ALICE, "delete", require_claim=False)
    with pytest.raises(InvalidInputError, match="CurrentUser"):
        review.decide(store_copy, PIXEL, "alice", "approve", require_claim=False)  # a bare name is not a user
    with pytest.raises(PermissionDeniedError, match="not logged in"):
        review.decide(store_copy, PIXEL, CurrentUser.local("  ", secrets_files=()), "approve", require_claim=False)
    assert store_copy.review.decisions().empty


def test_bulk_flag_skips_items_claimed_by_others(store_copy: Store) -> None:
    review.claim(store_copy, "civitai:160844", BOB)
    res = review.bulk_flag(store_copy, [PIXEL, "civitai:160844", PIXEL], ALICE, "scatter corner")
    assert res["flagged"] == [PIXEL]
    assert res["skipped"] == [("civitai:160844", "claimed by bob")]


def test_queue_groups_near_duplicates(store_copy: Store) -> None:
    review.bulk_flag(store_copy, [PIXEL], ALICE)
    view = load_view(store_copy)
    q = review.review_queue(store_copy, view, near_duplicate_cos=0.85)
    assert list(q["lora_id"]) == [PIXEL]
    assert "civitai:503382" in q.iloc[0]["near_duplicates"]  # AziibPixelMix, cosine 0.875
    assert review.review_queue(store_copy, view, statuses=["approved"]).empty


def test_thresholds_history(store_copy: Store) -> None:
    assert review.current_thresholds(store_copy) == Thresholds()
    review.set_thresholds(store_copy, Thresholds(8.0, None), CAROL, "stricter")
    assert review.current_thresholds(store_copy) == Thresholds(8.0, None)
    hist = store_copy.review.threshold_history()
    assert hist.iloc[0]["reviewer"] == "carol"


def test_exports(store_copy: Store) -> None:
    review.bulk_flag(store_copy, [PIXEL], ALICE, "note, with comma")
    csv = pd.read_csv(io.BytesIO(review.export_audit_log(store_copy, "csv")))
    pq = pd.read_parquet(io.BytesIO(review.export_audit_log(store_copy, "parquet")))
    assert list(csv["note"]) == ["note, with comma"] == list(pq["note"])
    with pytest.raises(InvalidInputError):
        review.export_audit_log(store_copy, "xlsx")


def test_access_policy() -> None:
    local = AccessPolicy.from_list(None)
    assert local.can_write("anyone") and not local.can_write(None)
    listed = AccessPolicy.from_list(["Alice@example.org"])
    assert listed.can_write("alice@example.org") and not listed.can_write("eve@example.org")


def test_every_workflow_function_accepts_any_name_of_a_lora(store_copy: Store) -> None:
    """Issue 14: a claim made by Civitai version id is the claim a decision by lora_id sees."""
    review.claim(store_copy, "130580", ALICE)
    assert review.claim_holder(store_copy, PIXEL) == "alice"
    with pytest.raises(PermissionDeniedError, match=f"{PIXEL} is claimed by alice"):
        review.claim(store_copy, PIXEL, BOB)
    review.decide(store_copy, "130580", ALICE, "flag", "by version id")
    assert review.claim_holder(store_copy, "130580") is None
    assert review.status_of(store_copy, "130580") == "flagged"
    review.claim(store_copy, PIXEL, ALICE)
    review.decide(store_copy, PIXEL, ALICE, "escalate")
    log = review.history(store_copy, "130580")
    assert list(log["lora_id"]) == [PIXEL, PIXEL]
    assert list(log["action"]) == ["escalate", "flag"]
    assert list(review.history(store_copy)["lora_id"]) == [PIXEL, PIXEL]
    review.claim(store_copy, PIXEL, BOB)
    review.release(store_copy, "130580", BOB)
    assert review.claim_holder(store_copy, PIXEL) is None
    res = review.bulk_flag(store_copy, ["130580", PIXEL], BOB)
    assert res == {"flagged": [PIXEL], "skipped": []}
