"""AppTest of the search page on the real corpus: results, compare mode, unavailable CARLoS."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from carlos.config import REPO_ROOT

APP = str(REPO_ROOT / "streamlit_app.py")


def open_search(db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **params: str) -> AppTest:
    monkeypatch.setenv("CARLOS_DB", str(db))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))  # no CLIP weights here
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.query_params.update(params)
    return at.switch_page("pages/search.py").run()


def test_behaviour_search_renders_results(real_store_path: Path, monkeypatch, tmp_path) -> None:
    at = open_search(real_store_path, monkeypatch, tmp_path, q="pixel art", r="behaviour", k="5")
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == 5 and table["name"].str.lower().str.contains("pixel").sum() >= 4
    assert any("text-seeded" in c.value for c in at.caption)
    assert any("LoRAs removed by the thresholds" in t.label for t in at.toggle)


def test_compare_mode_marks_what_each_finds_alone(real_store_path: Path, monkeypatch, tmp_path) -> None:
    at = open_search(real_store_path, monkeypatch, tmp_path, q="pixel art", r="behaviour", k="10", cmp="1")
    assert not at.exception
    assert len(at.dataframe) == 2
    left, right = at.dataframe[0].value, at.dataframe[1].value
    assert left["name"].str.startswith("★").any()  # behaviour finds LoRAs BM25 does not
    assert any("only by behaviour" in c.value for c in at.caption)
    assert len(right) == 10


def test_carlos_without_weights_is_explained(real_store_path: Path, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("CARLOS_CLIP_CHECKPOINT", raising=False)
    at = open_search(real_store_path, monkeypatch, tmp_path, q="pixel art", r="carlos")
    assert not at.exception
    assert any("unavailable" in w.value for w in at.warning)
    assert not at.dataframe
