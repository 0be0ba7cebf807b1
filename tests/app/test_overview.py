"""AppTest of the overview page on the real corpus."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from carlos.config import REPO_ROOT, Thresholds
from carlos.review import workflow as review
from carlos.search.capabilities import RETRIEVERS
from carlos.store.store import Store

APP = str(REPO_ROOT / "streamlit_app.py")


def test_overview_shows_the_corpus(real_store_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CARLOS_DB", str(real_store_path))
    monkeypatch.setenv("CARLOS_REVIEWER", "ada")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["LoRAs"] == "740"
    assert metrics["Too strong (Str > 9.8)"] == "21" and metrics["Too unstable (Cons < 0.041)"] == "204"
    assert metrics["Retained for retrieval"] == "515"
    assert int(metrics["review"]) + int(metrics["low risk"]) == 515
    tables = [t.value for t in at.dataframe]
    assert any(len(t) == 740 for t in tables)
    caps = next(t for t in tables if "what" in t.columns)
    assert set(RETRIEVERS.values()) <= set(caps["what"]) and "GPU" in set(caps["what"])
    assert any("pypi:carlos==0.0.3" in c.value for c in at.caption)
    assert any("Reviewer: **ada**" in c.value for c in at.sidebar.caption)
    assert any("No review decisions yet" in c.value for c in at.caption)


def test_overview_follows_saved_thresholds_and_shows_recent_decisions(store_copy: Store, monkeypatch) -> None:
    review.set_thresholds(store_copy, Thresholds(9.0, None), "bob", "stricter")
    review.bulk_flag(store_copy, ["civitai:130580"], "bob", "pixel style")
    monkeypatch.setenv("CARLOS_DB", str(store_copy.path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Too unstable (Cons < off)"] == "0"
    assert int(metrics["Too strong (Str > 9)"]) > 21
    assert any("set by bob" in m.value for m in at.markdown)
    recent = next(t.value for t in at.dataframe if "action" in t.value.columns)
    assert list(recent["name"]) == ["Pixel Art XL"] and list(recent["status_after"]) == ["flagged"]
