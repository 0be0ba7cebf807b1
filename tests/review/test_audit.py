"""The audit log as one timeline: decisions, claims and releases, threshold changes; claims
leave statuses and the decision history alone; exports in CSV (formulas neutralized), JSON
and Parquet."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from carlos.config import Thresholds
from carlos.errors import InvalidInputError
from carlos.review import workflow as review
from carlos.review.access import CurrentUser
from carlos.review.audit import COLUMNS, audit_log, audit_records, export_audit
from carlos.store.catalog import load_view
from carlos.store.store import Store

PIXEL = "civitai:130580"
ADA = CurrentUser.local("ada", secrets_files=())  # local mode


@pytest.fixture(autouse=True)
def _local_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARLOS_REVIEWERS", raising=False)


def test_claims_and_releases_are_logged_but_are_not_decisions(store_copy: Store) -> None:
    assert audit_log(store_copy).empty and list(audit_log(store_copy).columns) == COLUMNS
    review.claim(store_copy, "130580", ADA)
    review.release(store_copy, PIXEL, ADA)
    review.claim(store_copy, PIXEL, ADA)
    review.decide(store_copy, PIXEL, ADA, "escalate", "second opinion")
    review.set_thresholds(store_copy, Thresholds(9.0, None), ADA, "stricter")
    log = audit_log(store_copy)
    assert list(log["event"]) == ["thresholds", "decision", "claim", "release", "claim"]
    assert log.iloc[0]["strength_max"] == 9.0 and pd.isna(log.iloc[0]["consistency_min"])
    claim = log.iloc[2]
    assert (claim["lora_id"], claim["name"], claim["status_before"], claim["status_after"]) == (
        PIXEL,
        "Pixel Art XL",
        "unreviewed",
        "unreviewed",
    )
    # decisions only where decisions are asked for; the status ignores claim rows
    assert list(review.history(store_copy)["action"]) == ["escalate"]
    assert review.status_of(store_copy, PIXEL) == "escalated"
    row = review.status_frame(store_copy, load_view(store_copy)).set_index("lora_id").loc[PIXEL]
    assert (row["status"], row["reviewer"], row["note"]) == ("escalated", "ada", "second opinion")
    # one LoRA's events (by any of its names) leave the thresholds out; limit keeps the newest
    assert list(audit_log(store_copy, "130580")["event"]) == ["decision", "claim", "release", "claim"]
    assert list(audit_log(store_copy, limit=2)["event"]) == ["thresholds", "decision"]


def test_records_are_plain_json(store_copy: Store) -> None:
    review.claim(store_copy, PIXEL, ADA)
    records = audit_records(store_copy)
    text = json.dumps(records, allow_nan=False)  # no NaN, no timestamps objects
    back = json.loads(text)
    assert back[0]["event"] == "claim" and back[0]["note"] is None and back[0]["strength_max"] is None
    assert back[0]["at"][:4].isdigit() and "T" in back[0]["at"]


def test_exports_neutralize_formulas_in_csv(store_copy: Store) -> None:
    review.bulk_flag(store_copy, [PIXEL], ADA, '=HYPERLINK("http://127.0.0.1/x")')
    csv = pd.read_csv(io.BytesIO(export_audit(store_copy, "csv")))
    assert list(csv["note"]) == ['\'=HYPERLINK("http://127.0.0.1/x")']
    js = json.loads(export_audit(store_copy, "json"))
    assert [r["note"] for r in js] == ['=HYPERLINK("http://127.0.0.1/x")']  # JSON is data, kept as written
    pq = pd.read_parquet(io.BytesIO(export_audit(store_copy, "parquet")))
    assert list(pq["event"]) == ["decision"] and list(pq["reviewer"]) == ["ada"]
    with pytest.raises(InvalidInputError, match="csv, json, parquet"):
        export_audit(store_copy, "xlsx")
