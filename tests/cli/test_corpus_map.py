"""``corpus import`` fits and caches the default map once (so no dashboard visitor has to), and
a second import fits nothing. UMAP itself is replaced by a stand-in here: tests/viz/test_maps.py
fits the real one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from carlos.cli.main import main
from carlos.config import REPO_ROOT
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
    db = tmp_path / "c.duckdb"
    argv = ["--db", str(db), "corpus", "import", "--cache-dir", str(cache), "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["map"]["fitted_now"] and first["map"]["points"] == 740 and fits == [740]
    store = Store.open(db)
    assert store.caches.has_map(first["map"]["key"]) and store.caches.map_usage().entries == 1
    # the default map is what the Map page asks for with its default parameters
    assert maps.cached_map(store, load_view(store), maps.MapConfig()).key == first["map"]["key"]
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["already_imported"] and not again["map"]["fitted_now"] and fits == [740]
    assert main([*argv[:-1], "--no-map", "--json"]) == 0 and "map" not in json.loads(capsys.readouterr().out)
