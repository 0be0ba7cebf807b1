"""``map clusters`` on the real corpus: named regions of the cached map, and a clear error without one.

The map here is the corpus's directions projected on their two leading principal axes (UMAP
is the product's map; its fit costs ~45 s of numba compile and optimisation, and what this test
checks, the command over a cached map, does not depend on how the coordinates were made)."""

from __future__ import annotations

import json

import numpy as np

from carlos.cli.main import main
from carlos.config import CORPUS_EMBEDDER
from carlos.store.catalog import load_view
from carlos.viz import maps


def _pca_fit(matrix: np.ndarray, config: maps.MapConfig) -> tuple[None, np.ndarray]:
    x = matrix - matrix.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return None, (x @ vt[:2].T).astype(np.float32)


def test_clusters_of_the_corpus_map_are_labelled_and_cover_every_lora(store_copy, monkeypatch, capsys) -> None:
    db = str(store_copy.path)
    assert main(["--db", db, "map", "clusters", "--json"]) == 2
    assert "no map of the corpus is cached" in capsys.readouterr().err

    monkeypatch.setattr(maps, "fit_umap", _pca_fit)
    maps.import_map(store_copy, load_view(store_copy, CORPUS_EMBEDDER))
    assert main(["--db", db, "map", "clusters", "--json", "--members", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    regions = [c for c in data["clusters"] if c["cluster_id"] >= 0]
    assert data["n_points"] == 740 and len(regions) >= 5
    assert sum(c["size"] for c in data["clusters"]) == 740
    assert all(c["label"] and c["terms"] and len(c["members"]) == 3 for c in regions)
    assert sum(sum(c["risk_mix"].values()) for c in data["clusters"]) == 740
    assert {"too strong", "too unstable"} <= {k for c in data["clusters"] for k in c["risk_mix"]}

    assert main(["--db", db, "map", "clusters"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{len(regions)} regions over 740 LoRAs") and regions[0]["label"] in text
