"""AppTest of weight-space matches on the pages: detail ("same weights as …", the energy chart),
the review page's groups of copies, and the Characterize page's validation report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from streamlit.testing.v1 import AppTest

from carlos.characterize import jobs
from carlos.config import REPO_ROOT
from carlos.files.testing import make_test_lora
from carlos.review import workflow
from carlos.review.access import CurrentUser
from carlos.store.store import Store

APP = str(REPO_ROOT / "streamlit_app.py")
BOB = CurrentUser.local("bob")


@pytest.fixture
def copies(store_copy: Store, tmp_path: Path) -> dict[str, str]:
    """An upload flagged by bob, and a re-saved copy of it (fp16, up halved, down doubled, no metadata)."""
    orig = make_test_lora(tmp_path / "orig.safetensors", seed=21, metadata={"ss_output_name": "Banned <b>style</b>"})
    t = {k: v.astype(np.float32) for k, v in load_file(str(orig)).items()}
    scaled = {k: (v * 0.5 if "lora_up" in k else v * 2.0 if "lora_down" in k else v).astype(np.float16) for k, v in t.items()}
    save_file(scaled, str(tmp_path / "copy.safetensors"))
    a = jobs.submit(store_copy, orig, backend="tiny", protocol="smoke", user=BOB)
    workflow.claim(store_copy, a.lora_id, BOB)
    workflow.decide(store_copy, a.lora_id, BOB, "flag")
    b = jobs.submit(store_copy, tmp_path / "copy.safetensors", backend="tiny", protocol="smoke", user=BOB, original_name="copy.safetensors")
    return {"orig": a.lora_id, "copy": b.lora_id, "db": str(store_copy.path)}


def _start(db: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("CARLOS_DB", db)
    monkeypatch.setenv("CARLOS_REVIEWER", "ada")
    return AppTest.from_file(APP, default_timeout=60).run()


def test_detail_page_shows_same_weights_and_the_energy_chart(copies: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    at = _start(copies["db"], monkeypatch)
    at.query_params["lora"] = copies["copy"]
    at.switch_page("pages/detail.py").run()
    assert not at.exception and not at.error
    assert "Weights" in [h.value for h in at.subheader]
    lines = [m.value for m in at.markdown if "same weights as" in m.value]
    assert len(lines) == 1 and "flagged by bob" in lines[0] and "<b>" not in lines[0]  # creator text stays inert
    assert any("not a prediction of what the LoRA does" in c.value for c in at.caption)
    assert at.get("plotly_chart")


def test_review_page_groups_the_copy_with_its_flagged_original(copies: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    at = _start(copies["db"], monkeypatch).switch_page("pages/review.py").run()
    assert not at.exception and not at.error
    groups = next(t.value for t in at.dataframe if "suggested_decision" in t.value.columns).set_index("role")
    assert groups.loc["copy", "suggested_decision"] == "flagged" and groups.loc["original", "status"] == "flagged"
    assert groups.loc["copy", "group"] == groups.loc["original", "group"]
    assert groups.loc["copy", "suggested_because"].startswith("its original Banned <b>style</b> was flagged by bob")


def test_characterize_page_reports_the_weights_before_anything_is_enqueued(copies: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.worker.ensure_background_worker", lambda: None)
    monkeypatch.setenv("CARLOS_DB", copies["db"])
    monkeypatch.setenv("CARLOS_REVIEWER", "ada")
    store = Store.open(copies["db"])
    n = store.fingerprints.count()
    copy_file = Path(store.fingerprints.get(copies["copy"])["file_path"])
    at = AppTest.from_file(str(REPO_ROOT / "pages" / "characterize.py"), default_timeout=60).run()
    at.file_uploader[0].upload("again.safetensors", copy_file.read_bytes()).run()
    assert not at.exception
    alerts = [e.value for e in at.error if e.value.startswith("Weights:")]
    assert len(alerts) == 1 and "same weights as Banned" in alerts[0] and "flagged by bob" in alerts[0]
    assert "\\<b\\>" in alerts[0]  # the creator's markup, escaped: shown as its characters
    assert any("This exact file was uploaded before" in i.value for i in at.info)  # itself: by sha256, not again by weights
    assert store.fingerprints.count() == n  # nothing stored before "Enqueue"
