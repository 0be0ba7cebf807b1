"""AppTest of the map page on the real corpus: fitted once (few epochs, from the link),
cached in the store, uploads placed on it, the fallback announced after a restart."""

from __future__ import annotations

import base64
import json

import numpy as np
from streamlit.testing.v1 import AppTest

from carlos.config import CORPUS_EMBEDDER, REPO_ROOT
from carlos.store.catalog import load_view
from carlos.store.store import Store
from carlos.viz import maps

APP = str(REPO_ROOT / "streamlit_app.py")


def spec(at: AppTest) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def values(v: list | dict) -> np.ndarray:
    """A Plotly JSON array: a list, or a base64 typed array ({"dtype", "bdata"})."""
    if isinstance(v, dict):
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
    return np.asarray(v)


def test_map_fits_once_places_uploads_and_explains_the_fallback(store_copy: Store, monkeypatch) -> None:
    monkeypatch.setenv("CARLOS_DB", str(store_copy.path))
    maps.forget_models()
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.query_params.update({"ep": "30", "hl": "civitai:130580", "colour": "Strength"})
    at.switch_page("pages/map.py").run()
    assert not at.exception and not at.error
    fig = spec(at)
    base = fig["data"][0]
    assert len(base["customdata"]) == 740 and base["marker"]["showscale"]
    assert [t["name"] for t in fig["data"][1:]] == ["highlighted (1)"]
    assert any("computed now" in c.value for c in at.caption)
    key = next(c.value for c in at.caption if "computed now" in c.value).split("`")[1]
    assert len(store_copy.caches.get_map(key)) == 740

    # an upload behaving like Pixel Art XL is placed next to it, with the fitted model
    view = load_view(store_copy)
    pixel = view.matrix[view.row_of("civitai:130580")]
    store_copy.loras.upsert([{"lora_id": "sha256:" + "ab" * 32, "source": "upload", "name": "my pixel upload"}])
    store_copy.reps.put("sha256:" + "ab" * 32, CORPUS_EMBEDDER, pixel * 1.01, 4.0, 0.2, 16, {"protocol": "smoke", "backend": "tiny"})
    at.run()
    assert any("loaded from the store" in c.value and "fitted UMAP model" in c.value for c in at.caption)
    placed = next(t for t in spec(at)["data"] if t["name"].startswith("placed"))
    assert [c[1] for c in placed["customdata"]] == ["my pixel upload"]
    # after a restart only the coordinates survive: the page says how new points are placed
    maps.forget_models()
    at.run()
    assert any("fallback" in c.value and "approximate" in c.value for c in at.caption)
    fig = spec(at)
    xy = {c[0]: (x, y) for t in fig["data"] for x, y, c in zip(values(t["x"]), values(t["y"]), t["customdata"])}
    assert np.allclose(xy["sha256:" + "ab" * 32], xy["civitai:130580"])  # same direction: same place
    assert len(store_copy.caches.get_map(key)) == 740  # no refit, nothing re-stored
