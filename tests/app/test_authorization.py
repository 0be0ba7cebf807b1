"""Issue 14: every write widget, driven by a read-only user, records nothing.

Login is OIDC mode: ``at.secrets`` carries ``[auth]`` (so the page asks for a login) and
``at.user`` is the logged-in identity (AppTest's own way to set ``st.user``). The library
reads the reviewer list from the secrets *files*, which ``at.secrets`` does not reach, so
``app.access.secrets_files`` (the one input the app passes on to the library) is pointed at a
temporary ``secrets.toml`` with the same content.

Two attacks on each write widget:

* **a forced event** (a hostile client sends a click, value or upload for a widget the page
  rendered disabled): AppTest refuses to touch a disabled widget, so :func:`forced` clears the
  flag on the widget's proto and the next run receives the event as a server would. Streamlit
  (1.67) itself discards events of disabled widgets, so the page never even calls the service;
  the test checks that nothing is recorded.
* **a UI that trusts the wrong flag** (``app.access.current_user`` replaced by one that hands
  out ``can_write=True`` to the unlisted user, so every widget is enabled): the page calls the
  service, the library resolves the reviewer list itself and refuses; the page shows the
  error and nothing is recorded.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from app import access as app_access
from carlos.characterize import jobs
from carlos.config import REPO_ROOT
from carlos.files.testing import make_test_lora
from carlos.review import workflow as review
from carlos.review.access import CurrentUser
from carlos.review.audit import audit_log
from carlos.store.store import Store

PIXEL = "civitai:130580"
STALE = "civitai:160844"  # mallory claimed it while she was a reviewer
REVIEWER, OUTSIDER = "alice@example.org", "mallory@example.org"
SECRETS = f"""
[auth]
redirect_uri = "http://localhost:8501/oauth2callback"
cookie_secret = "not-a-secret"

[carlos]
reviewers = ["{REVIEWER}"]
"""


def page(name: str, store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, email: str | None) -> AppTest:
    """A page of the dashboard under OIDC login as ``email`` (None: nobody logged in)."""
    monkeypatch.setenv("CARLOS_DB", str(store.path))
    monkeypatch.delenv("CARLOS_REVIEWERS", raising=False)
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(SECRETS)
    monkeypatch.setattr("app.access.secrets_files", lambda: (str(secrets),))
    at = AppTest.from_file(str(REPO_ROOT / "pages" / name), default_timeout=60)
    at.secrets.update(tomllib.loads(SECRETS))
    at.user = {"is_logged_in": True, "email": email} if email else {"is_logged_in": False}
    return at


def forced(widget: Any) -> Any:
    """The widget as a hostile client uses it: rendered disabled, sent anyway."""
    assert widget.disabled, f"{widget} should be disabled for a read-only user"
    widget.proto.disabled = False
    return widget


def refused(at: AppTest, action: str) -> None:
    """The page explains the refusal (the library's PermissionDeniedError), no traceback."""
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith(f"Could not {action}") and "may not" in e for e in errors), errors


ORIGINAL_CURRENT_USER = app_access.current_user


def trusting_ui(monkeypatch: pytest.MonkeyPatch, email: str, tmp_path: Path) -> None:
    """From the next run on, the app believes ``email`` may write (every widget enabled)."""
    lie = CurrentUser(email, True, "", "oidc", True, (str(tmp_path / "secrets.toml"),))
    monkeypatch.setattr("app.access.current_user", lambda: lie)


def recorded(store: Store) -> tuple[str, str, str]:
    return (
        audit_log(store).to_json(date_format="iso"),
        store.review.current_statuses().to_json(date_format="iso"),
        store.jobs.recent().to_json(date_format="iso"),
    )


def test_detail_page_claim_decide_and_release(store_copy: Store, monkeypatch, tmp_path: Path) -> None:
    store_copy.review.claim(STALE, OUTSIDER)
    before = recorded(store_copy)
    at = page("detail.py", store_copy, monkeypatch, tmp_path, OUTSIDER)
    at.query_params["lora"] = PIXEL
    at.run()
    assert any("not a listed reviewer" in i.value for i in at.info)
    forced(at.button(key="detail_claim")).click().run()
    assert not at.exception and recorded(store_copy) == before
    # her stale claim shows the decision form, disabled
    at.selectbox(key="detail_lora").set_value(STALE).run()
    at.text_area(key="detail_note").input("forced")
    forced(at.form_submit_button[0]).click().run()
    forced(at.button(key="detail_release")).click().run()
    assert not at.exception and recorded(store_copy) == before

    trusting_ui(monkeypatch, OUTSIDER, tmp_path)
    at.run()
    at.radio(key="detail_action").set_value("approve")
    at.form_submit_button[0].click().run()
    refused(at, "record the decision")
    at.button(key="detail_release").click().run()
    refused(at, "release the claim")
    at.selectbox(key="detail_lora").set_value(PIXEL).run()
    at.button(key="detail_claim").click().run()
    refused(at, "claim this LoRA")
    assert recorded(store_copy) == before and review.claim_holder(store_copy, STALE) == OUTSIDER

    # the same page, the app's own login again, a listed reviewer: the claim goes through
    monkeypatch.setattr("app.access.current_user", ORIGINAL_CURRENT_USER)
    at.user = {"is_logged_in": True, "email": REVIEWER}
    at.run()
    at.button(key="detail_claim").click().run()
    assert not at.error and review.claim_holder(store_copy, PIXEL) == REVIEWER


def test_a_visitor_who_is_not_logged_in_cannot_claim(store_copy: Store, monkeypatch, tmp_path: Path) -> None:
    before = recorded(store_copy)
    at = page("detail.py", store_copy, monkeypatch, tmp_path, None)
    at.query_params["lora"] = PIXEL
    at.run()
    assert any(b.label == "Log in" for b in at.sidebar.button)
    forced(at.button(key="detail_claim")).click().run()
    assert recorded(store_copy) == before
    monkeypatch.setattr("app.access.current_user", lambda: CurrentUser("", True, "", "oidc", False, (str(tmp_path / "secrets.toml"),)))
    at.run()
    at.button(key="detail_claim").click().run()
    refused(at, "claim this LoRA")
    assert any("not logged in" in e.value for e in at.error) and recorded(store_copy) == before


def test_risk_page_bulk_flag_and_thresholds(store_copy: Store, monkeypatch, tmp_path: Path) -> None:
    before = recorded(store_copy)
    at = page("risk.py", store_copy, monkeypatch, tmp_path, OUTSIDER)
    at.query_params["sel"] = f"{PIXEL},civitai:503382"
    at.run()
    forced(at.form_submit_button[0]).click().run()
    forced(at.form_submit_button[1]).click().run()
    assert not at.exception and recorded(store_copy) == before
    trusting_ui(monkeypatch, OUTSIDER, tmp_path)
    at.run()
    at.form_submit_button[0].click().run()
    refused(at, "flag the selection")
    at.form_submit_button[1].click().run()
    refused(at, "save the thresholds")
    assert recorded(store_copy) == before and store_copy.review.threshold_history().empty


def test_characterize_page_upload_enqueue_and_cancel(store_copy: Store, monkeypatch, tmp_path: Path) -> None:
    # a queued job starts the in-process worker; this test only looks at the queue
    monkeypatch.setattr("app.worker.ensure_background_worker", lambda: None)
    queued = jobs.submit(store_copy, make_test_lora(tmp_path / "queued.safetensors", seed=8), user=CurrentUser.local(REVIEWER)).job_id
    uploads_dir = store_copy.path.parent / "cache" / "uploads"
    uploads = sorted(uploads_dir.iterdir())
    before = recorded(store_copy), store_copy.table_counts()
    lora = make_test_lora(tmp_path / "mallory.safetensors", seed=9).read_bytes()
    at = page("characterize.py", store_copy, monkeypatch, tmp_path, OUTSIDER)
    at.session_state["char_job"] = queued
    at.run()
    forced(at.file_uploader[0]).upload("mallory.safetensors", lora).run()
    assert not any(s.value == "Validation report" for s in at.subheader)  # the forged upload was dropped
    forced(at.button(key="char_cancel")).click().run()
    assert store_copy.jobs.get(queued)["status"] == "queued"

    trusting_ui(monkeypatch, OUTSIDER, tmp_path)
    at.run()
    at.file_uploader[0].upload("mallory.safetensors", lora).run()
    assert any(s.value == "Validation report" for s in at.subheader)
    at.button(key="char_enqueue").click().run()
    refused(at, "enqueue the job")
    at.button(key="char_cancel").click().run()
    refused(at, "cancel the job")
    assert store_copy.jobs.get(queued)["status"] == "queued"
    assert (recorded(store_copy), store_copy.table_counts()) == before
    assert sorted(uploads_dir.iterdir()) == uploads  # nothing stored
