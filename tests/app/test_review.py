"""AppTest of the review page: empty states, a decision made on the detail page shows in
the queue and the audit log, near-duplicates grouped, filters say what they hide."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from carlos.config import REPO_ROOT
from carlos.review import workflow as review
from carlos.review.access import CurrentUser
from carlos.store.store import Store

BOB = CurrentUser.local("bob")  # another reviewer, local mode

APP = str(REPO_ROOT / "streamlit_app.py")
PIXEL = "civitai:130580"


def start(db: Path, monkeypatch: pytest.MonkeyPatch, reviewer: str = "ada") -> AppTest:
    monkeypatch.setenv("CARLOS_DB", str(db))
    monkeypatch.setenv("CARLOS_REVIEWER", reviewer)
    return AppTest.from_file(APP, default_timeout=60).run()


def table_with(at: AppTest, column: str):
    return next(t.value for t in at.dataframe if column in t.value.columns)


def test_empty_queue_and_log_are_explained(real_store_path: Path, monkeypatch) -> None:
    at = start(real_store_path, monkeypatch).switch_page("pages/review.py").run()
    assert not at.exception and not at.error
    assert any("Nothing in the queue" in i.value for i in at.info)
    assert any("No decisions recorded yet" in c.value for c in at.caption)
    toggle = at.toggle(key="rq_show_all")
    assert toggle.label.startswith("Show the 740 LoRAs removed")
    toggle.set_value(True).run()
    assert len(table_with(at, "near_duplicates")) == 740


def test_a_detail_page_decision_reaches_the_queue_and_the_audit_log(store_copy: Store, monkeypatch) -> None:
    at = start(store_copy.path, monkeypatch)
    at.query_params["lora"] = PIXEL
    at.switch_page("pages/detail.py").run()
    at.button(key="detail_claim").click().run()
    at.radio(key="detail_action").set_value("flag")
    at.text_area(key="detail_note").input("pixel-art style of a living artist?")
    at.form_submit_button[0].click().run()
    review.claim(store_copy, "civitai:160844", BOB)
    review.decide(store_copy, "civitai:160844", BOB, "escalate", "second opinion")

    at.query_params.clear()
    at.query_params["cos"] = "0.85"
    at.switch_page("pages/review.py").run()
    assert not at.exception
    queue = table_with(at, "near_duplicates")
    assert list(queue["status"]) == ["escalated", "flagged"]
    pixel = queue[queue["name"] == "Pixel Art XL"].iloc[0]
    assert "AziibPixelMix" in pixel["near_duplicates"] and pixel["claim"] == "unclaimed"
    log = table_with(at, "change")
    assert list(zip(log["reviewer"], log["name"], log["change"], log["note"])) == [
        ("bob", review_name(store_copy, "civitai:160844"), "unreviewed → escalated", "second opinion"),
        ("ada", "Pixel Art XL", "unreviewed → flagged", "pixel-art style of a living artist?"),
    ]
    logs = [b.label for b in at.download_button if not b.key.startswith("rq_case_")]  # the case-file buttons: tests/report
    assert logs == ["Download the whole log (CSV)", "Download the whole log (Parquet)"]

    # filters say how many decisions they hide, and can be undone with the toggle
    at.multiselect(key="log_reviewer").set_value(["ada"]).run()
    assert list(table_with(at, "change")["reviewer"]) == ["ada"]
    toggle = at.toggle(key="log_show_all")
    assert toggle.label.startswith("Show the 1 decisions removed")
    toggle.set_value(True).run()
    assert len(table_with(at, "change")) == 2
    # the queue filtered by reviewer
    at.selectbox(key="rq_reviewer").set_value("bob").run()
    assert list(table_with(at, "near_duplicates")["status"]) == ["escalated"]
    assert at.query_params["reviewer"] == "bob"


def review_name(store: Store, lora_id: str) -> str:
    return store.loras.get(lora_id)["name"]
