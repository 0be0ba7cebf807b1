"""AppTest of the overview page on the real corpus."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from carlos.config import REPO_ROOT


def test_overview_shows_the_corpus(real_store_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CARLOS_DB", str(real_store_path))
    at = AppTest.from_file(str(REPO_ROOT / "streamlit_app.py"), default_timeout=60).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["LoRAs"] == "740"
    assert metrics["Retained for retrieval"] == "515"
    assert len(at.dataframe) >= 1 and len(at.dataframe[0].value) == 740
