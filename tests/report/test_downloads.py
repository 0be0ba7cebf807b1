"""The dashboard's "Download case file" buttons: on a LoRA's detail page, and for a selection of
the review queue (the file is made when the button is clicked; its content is the service's,
checked in test_case_file.py and test_documents.py)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from carlos.config import REPO_ROOT
from carlos.report import export

from .conftest import Upload

APP = str(REPO_ROOT / "streamlit_app.py")


def start(upload: Upload, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("CARLOS_DB", str(upload.store.path))
    monkeypatch.setenv("CARLOS_REVIEWER", "ada")
    return AppTest.from_file(APP, default_timeout=60).run()


def test_detail_page_offers_the_case_file(upload: Upload, monkeypatch) -> None:
    at = start(upload, monkeypatch)
    at.query_params["lora"] = upload.lora_id
    at.switch_page("pages/detail.py").run()
    assert not at.exception
    buttons = {b.key: b for b in at.get("download_button")}
    wanted = {f"detail_case_{fmt}" for fmt in export.download_formats()}
    assert wanted <= set(buttons) and export.download_formats() == ("html", "pdf")  # WeasyPrint works here
    assert [buttons[k].label for k in sorted(wanted)] == ["Download case file (HTML)", "Download case file (PDF)"]
    assert not any(buttons[k].disabled for k in wanted)
    assert any("sha256 over its data" in c.value and "blurred in the file" in c.value for c in at.caption)


def test_review_queue_selection_makes_one_case_file(upload: Upload, monkeypatch) -> None:
    at = start(upload, monkeypatch).switch_page("pages/review.py").run()
    assert not at.exception
    pick = at.multiselect(key="rq_case")
    assert any(upload.lora_id in o for o in pick.options)  # the flagged upload is in the queue
    assert all(b.disabled for b in at.get("download_button") if b.key.startswith("rq_case_"))
    pick.set_value([upload.lora_id]).run()
    assert not at.exception
    ready = [b for b in at.get("download_button") if b.key.startswith("rq_case_")]
    assert len(ready) == 2 and not any(b.disabled for b in ready)
    assert export.download_name([upload.lora_id, "civitai:130580"], "pdf").endswith("-and-1-more.pdf")
