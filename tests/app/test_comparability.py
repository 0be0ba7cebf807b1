"""An upload measured with another prompt set says so: detail page, risk page, ``show`` and similarity lists."""

from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from carlos.cli.main import main
from carlos.config import CORPUS_EMBEDDER, REPO_ROOT
from carlos.store.store import Store

APP = str(REPO_ROOT / "streamlit_app.py")
OURS = "upload:measured-our-way"
PIXEL = "civitai:130580"


@pytest.fixture
def store_with_upload(store_copy: Store) -> Store:
    """An upload in the corpus's space, measured with the team's prompt set and per-image seeds."""
    pixel = store_copy.reps.of(PIXEL)[0]
    store_copy.loras.upsert([{"lora_id": OURS, "source": "upload", "name": "Measured our way"}])
    prov = {"protocol": "quick", "prompt_set": "carlos-prompts-v1", "backend": "sdxl", "source": "characterized"}
    direction = pixel.direction + np.float32(0.01)  # a near twin of Pixel Art XL
    store_copy.reps.put(OURS, CORPUS_EMBEDDER, direction, 5.0, 0.2, 70, {**prov, "settings": {"noise": "per-image-seed"}})
    return store_copy


def test_show_and_similar_say_it_is_not_comparable(store_with_upload: Store, capsys) -> None:
    db = str(store_with_upload.path)
    assert main(["--db", db, "show", OURS, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)["representations"][0]
    assert rep["comparability"]["comparable"] is False
    assert rep["comparability"]["message"].startswith("measured with carlos-prompts-v1")
    assert "not directly comparable with the corpus" in rep["comparability"]["message"]
    assert main(["--db", db, "show", PIXEL, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["representations"][0]["comparability"]["comparable"] is True
    assert main(["--db", db, "similar", PIXEL, "--top-k", "3", "--json"]) == 0
    hits = {h["lora_id"]: h for h in json.loads(capsys.readouterr().out)["hits"]}
    assert OURS in hits and any("measured differently from the corpus" in f for f in hits[OURS]["flags"])
    assert not any("measured differently" in f for lid, h in hits.items() if lid != OURS for f in h["flags"])


def test_pages_say_it_plainly(store_with_upload: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARLOS_DB", str(store_with_upload.path))
    monkeypatch.setenv("CARLOS_REVIEWER", "ada")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.query_params.update(lora=OURS)
    at.switch_page("pages/detail.py").run()
    assert not at.exception
    assert any("measured with carlos-prompts-v1" in w.value and "not directly comparable" in w.value for w in at.warning)
    at.switch_page("pages/risk.py").run()
    assert not at.exception
    assert any("1 LoRA(s) on this scatter were measured differently from the corpus" in w.value for w in at.warning)
