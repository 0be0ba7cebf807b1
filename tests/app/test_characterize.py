"""AppTest of the characterize page: the demo label, the sdxl explanation, and a finished job
(enqueued through the library, as the upload button does) shown with its result."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from carlos.characterize import jobs
from carlos.config import REPO_ROOT
from carlos.files.testing import make_test_lora
from carlos.store.store import Store

APP = str(REPO_ROOT / "streamlit_app.py")


def test_page_labels_the_tiny_backend_as_a_demo(store_copy: Store, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CARLOS_DB", str(store_copy.path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    at = AppTest.from_file(APP, default_timeout=120).run().switch_page("pages/characterize.py").run()
    assert not at.exception
    assert any("random weights" in w.value for w in at.warning)
    at.radio[0].set_value("sdxl").run()
    assert any("needs SDXL base 1.0" in e.value for e in at.error)


def test_finished_job_is_shown_with_its_result(store_copy: Store, monkeypatch, tmp_path) -> None:
    lora = tmp_path / "demo.safetensors"
    make_test_lora(lora, seed=4)
    sub = jobs.submit(store_copy, lora, backend="tiny", protocol="smoke", requested_by="test")
    jobs.Worker(store_copy, worker_id="test").run_one(job_id=sub.job_id)
    monkeypatch.setenv("CARLOS_DB", str(store_copy.path))
    at = AppTest.from_file(APP, default_timeout=120).run().switch_page("pages/characterize.py")
    at.session_state["char_job"] = sub.job_id
    at.run()
    assert not at.exception
    assert any(s.value.startswith(f"Job #{sub.job_id}: finished") for s in at.subheader)
    labels = {m.label for m in at.metric}
    assert {"Strength", "Consistency", "Pairs"} <= labels
    assert any("Demo space" in c.value for c in at.caption)
