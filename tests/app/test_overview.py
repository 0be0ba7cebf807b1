"""AppTest of the overview page on the real corpus."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from carlos.config import REPO_ROOT, Thresholds
from carlos.review import workflow as review
from carlos.review.access import CurrentUser
from carlos.search.capabilities import RETRIEVERS
from carlos.store.store import Store

BOB = CurrentUser.local("bob")  # another reviewer, local mode

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
    review.set_thresholds(store_copy, Thresholds(9.0, None), BOB, "stricter")
    review.bulk_flag(store_copy, ["civitai:130580"], BOB, "pixel style")
    monkeypatch.setenv("CARLOS_DB", str(store_copy.path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Too unstable (Cons < off)"] == "0"
    assert int(metrics["Too strong (Str > 9)"]) > 21
    assert any("set by bob" in m.value for m in at.markdown)
    recent = next(t.value for t in at.dataframe if "action" in t.value.columns)
    assert list(recent["name"]) == ["Pixel Art XL"] and list(recent["status_after"]) == ["flagged"]


def test_overview_says_which_clip_checkpoint_was_found_and_in_which_format(real_store_path: Path, tmp_path: Path, monkeypatch) -> None:
    from app.resources import capabilities

    snap = tmp_path / "hub" / "models--openai--clip-vit-base-patch32" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (snap / "model.safetensors").write_bytes(b"x")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("CARLOS_CLIP_CHECKPOINT", raising=False)
    monkeypatch.setenv("CARLOS_DB", str(real_store_path))
    capabilities.clear()  # checked at most once a minute: forget what an earlier test saw
    try:
        at = AppTest.from_file(APP, default_timeout=60).run()
    finally:
        capabilities.clear()
    assert not at.exception
    caps = next(t.value for t in at.dataframe if "what" in t.value.columns)
    detail = dict(zip(caps["what"], caps["detail"]))["CLIP ViT-B-32/openai weights"]
    assert detail == f"transformers format (model.safetensors) at {snap}, from the Hugging Face cache (openai/clip-vit-base-patch32)"
