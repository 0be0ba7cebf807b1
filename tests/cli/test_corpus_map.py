"""``corpus import`` fits and caches the default map once and embeds the LoRA descriptions once (so
no dashboard visitor has to), and a second import does neither. UMAP and the sentence model are
replaced by stand-ins here: tests/viz/test_maps.py fits the real map, tests/search the real model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from carlos.cli.main import main
from carlos.config import REPO_ROOT
from carlos.search import service
from carlos.store.catalog import load_view
from carlos.store.store import Store
from carlos.viz import maps


def test_corpus_import_fits_the_default_map_once(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch, corpus_parquet) -> None:
    fits: list[int] = []
    cache = REPO_ROOT / "data" / "cache"  # where the corpus_parquet fixture keeps the verified release

    def stand_in(matrix: np.ndarray, config: maps.MapConfig):
        fits.append(len(matrix))
        return None, np.random.default_rng(0).normal(size=(len(matrix), 2))

    monkeypatch.setattr(maps, "fit_umap", stand_in)
    embedded: list[int] = []

    class Embedder:
        model_id = "stand-in"

        def embed(self, texts: list[str], progress=None) -> np.ndarray:
            embedded.append(len(texts))
            return np.ones((len(texts), 4), dtype=np.float32)

    monkeypatch.setattr(service, "_default_text_embedder", lambda model: Embedder())
    db = tmp_path / "c.duckdb"
    argv = ["--db", str(db), "corpus", "import", "--cache-dir", str(cache), "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["map"]["fitted_now"] and first["map"]["points"] == 740 and fits == [740]
    assert first["text_index"] == {"available": True, "model": "stand-in", "embedded_now": 740} and embedded == [740]
    store = Store.open(db)
    assert store.caches.has_map(first["map"]["key"]) and store.caches.map_usage().entries == 1
    # the default map is what the Map page asks for with its default parameters
    assert maps.cached_map(store, load_view(store), maps.MapConfig()).key == first["map"]["key"]
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["already_imported"] and not again["map"]["fitted_now"] and fits == [740]
    assert again["text_index"]["embedded_now"] == 0 and embedded == [740]
    assert main([*argv[:-1], "--no-map", "--no-text-index", "--json"]) == 0
    assert not {"map", "text_index"} & set(json.loads(capsys.readouterr().out))


def test_corpus_import_says_why_without_the_text_model(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch, corpus_parquet) -> None:
    from carlos.errors import WeightsUnavailableError

    def absent(model):
        raise WeightsUnavailableError("text model all-MiniLM-L6-v2 is not installed here")

    monkeypatch.setattr(service, "_default_text_embedder", absent)
    argv = ["--db", str(tmp_path / "c.duckdb"), "corpus", "import", "--cache-dir", str(REPO_ROOT / "data" / "cache"), "--no-map"]
    assert main(argv) == 0
    assert "text embeddings of the descriptions: skipped (text model all-MiniLM-L6-v2 is not installed here)" in capsys.readouterr().out
