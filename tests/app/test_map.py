"""AppTest of the map page on the real corpus: fitted once by a reviewer's click (few epochs,
from the link), cached in the store, uploads placed on it, the fallback announced after a
restart; a read-only visitor sees a cached map or a note, never starts a fit, and writes nothing.
The map names its regions (labels drawn, a table with counts and risk mix, a chosen region lists
its LoRAs), keeps its view state in the link, draws a large map as density and a sample, and the
detail and search pages say which region a LoRA falls in."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import unquote

import numpy as np
from streamlit.testing.v1 import AppTest

from app.text import literal
from carlos.config import CORPUS_EMBEDDER, REPO_ROOT
from carlos.core.risk import RISK_CLASSES
from carlos.core.untrusted import plotly_literal
from carlos.review.access import AccessPolicy, CurrentUser
from carlos.store.catalog import load_view
from carlos.store.store import Store
from carlos.viz import clusters, maps, mapview

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
    assert not at.get("plotly_chart") and any("No map with these UMAP parameters is cached" in i.value for i in at.info)
    at.button(key="map_fit").click().run()  # local mode: this session is the reviewer
    assert not at.exception and not at.error
    fig = spec(at)
    base = fig["data"][0]
    assert len(base["customdata"]) == 740 and base["marker"]["showscale"]
    assert [t["name"] for t in fig["data"][1:]][:1] == ["highlighted (1)"]
    assert {t["name"] for t in fig["data"][2:]} <= {"region centres"}  # the map's named regions (tests below)
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


READ_ONLY = {"is_logged_in": True, "email": "eve@example.org"}


def _read_only(at: AppTest, monkeypatch) -> AppTest:
    """An OIDC session of an unlisted user; the library reads the list from $CARLOS_REVIEWERS
    (AppTest's secrets reach st.secrets only, not the files the library reads)."""
    monkeypatch.setenv("CARLOS_REVIEWERS", "ada@example.org")
    at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "s"}
    at.secrets["carlos"] = {"reviewers": ["ada@example.org"]}
    at.user = READ_ONLY
    return at


def _footprint(store: Store) -> tuple[dict[str, int], int, str]:
    """Row counts, file size and content hash of the store: what any write would change."""
    data = store.path.read_bytes()
    return store.table_counts(), len(data), hashlib.sha256(data).hexdigest()


def test_a_visitor_without_a_cached_map_gets_a_note_and_cannot_start_a_fit(store_copy: Store, monkeypatch) -> None:
    monkeypatch.setenv("CARLOS_DB", str(store_copy.path))
    before = _footprint(store_copy)
    at = _read_only(AppTest.from_file(APP, default_timeout=60), monkeypatch).run()
    at.switch_page("pages/map.py").run()
    assert not at.exception and not at.error and not at.get("plotly_chart")
    assert any("No map of the corpus is cached yet" in i.value and "only a reviewer" in i.value for i in at.info)
    assert any("not a listed reviewer" in i.value for i in at.info)
    button = at.button(key="map_fit")
    assert button.disabled
    # a forged click (as a crafted widget event would send): Streamlit discards a disabled
    # widget's value, and maps.fit_map refuses a read-only user anyway (tests/viz/test_maps.py)
    button.proto.disabled = False
    button.click().run()
    assert not at.exception and not at.get("plotly_chart")
    assert _footprint(store_copy) == before


def test_a_visitor_sees_the_cached_map_and_writes_nothing(store_copy: Store, monkeypatch) -> None:
    monkeypatch.setenv("CARLOS_DB", str(store_copy.path))
    # a read refreshes a map's last use at most once per touch interval (a write to the bounded
    # cache only); with a long interval this visit must leave the file byte for byte as it was
    monkeypatch.setenv("CARLOS_CACHE_TOUCH_S", "3600")
    reviewer, policy = CurrentUser.local("ada@example.org"), AccessPolicy.from_list(["ada@example.org"])
    cmap = maps.fit_map(store_copy, load_view(store_copy), maps.MapConfig(n_epochs=30), user=reviewer, policy=policy)
    before = _footprint(store_copy)
    at = _read_only(AppTest.from_file(APP, default_timeout=60), monkeypatch).run()
    at.query_params["ep"] = "30"
    at.switch_page("pages/map.py").run()
    assert not at.exception and not at.error
    drawn = {c[0] for t in spec(at)["data"] for c in t.get("customdata", []) if isinstance(c, list) and str(c[0]).startswith("civitai:")}
    assert len(drawn) == 740  # every LoRA of the cached map is drawn
    assert any("loaded from the store" in c.value and cmap.key in c.value for c in at.caption)
    assert not any(b.key == "map_fit" for b in at.button)  # nothing to fit
    at.slider(key="map_nn").set_value(20).run()  # other parameters: no cached map, and still no fit
    assert not at.get("plotly_chart") and any("No map with these UMAP parameters" in i.value for i in at.info)
    assert _footprint(store_copy) == before


# --- named regions, view state, scale ------------------------------------------------------------
def _pca_fit(matrix: np.ndarray, config: maps.MapConfig) -> tuple[None, np.ndarray]:
    """The directions on their two leading principal axes: a cached map in milliseconds (UMAP's
    fit is what the test above checks; these tests are about what is drawn from a cached map)."""
    x = matrix - matrix.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return None, (x @ vt[:2].T).astype(np.float64)


def _mapped(store: Store, monkeypatch) -> tuple[maps.CorpusMap, clusters.MapClusters]:
    monkeypatch.setenv("CARLOS_DB", str(store.path))
    monkeypatch.setattr(maps, "fit_umap", _pca_fit)
    view = load_view(store)
    cmap = maps.import_map(store, view)
    return cmap, clusters.corpus_clusters(store, view, cmap)


def _map_page(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.query_params.update(query or {})
    at.switch_page("pages/map.py").run()
    assert not at.exception and not at.error
    return at


def _detail_links(at: AppTest) -> list[str]:
    return [p.proto.label for p in at.get("page_link") if p.proto.label.endswith("— details")]


def test_the_map_names_its_regions_and_a_chosen_region_lists_its_loras(store_copy: Store, monkeypatch) -> None:
    cmap, result = _mapped(store_copy, monkeypatch)
    regions = [c for c in result.clusters if c.cluster_id != clusters.NOISE]
    assert len(regions) >= 3
    at = _map_page()
    fig = spec(at)
    drawn = [a["text"] for a in fig["layout"]["annotations"]]
    assert len(drawn) >= 3 and set(drawn) <= {plotly_literal(c.label) for c in regions}
    assert drawn[0] == plotly_literal(regions[0].label)  # the largest region is labelled first
    centres = next(t for t in fig["data"] if t["name"] == "region centres")
    assert [c[0] for c in centres["customdata"]][:1] == [f"region:{regions[0].cluster_id}"]
    # the legend: one row per region with its count and risk mix, summing to the corpus
    table = next(d.value for d in at.dataframe if "region" in d.value.columns)
    assert table["region"].tolist() == [c.label for c in result.clusters]
    assert table["LoRAs"].sum() == 740
    assert (table[list(RISK_CLASSES)].sum(axis=1) == table["LoRAs"]).all()
    assert int(table[list(RISK_CLASSES)].to_numpy().sum()) == 740
    mix = spec_of(at, 1)
    assert {t["name"] for t in mix["data"]} <= set(RISK_CLASSES) and mix["layout"]["barmode"] == "stack"
    # choosing a region lists its LoRAs (links to their details), outlines it and goes into the link
    chosen = regions[1]
    at.selectbox(key="map_region").set_value(chosen.cluster_id).run()
    assert not at.exception and at.query_params["region"] == str(chosen.cluster_id)
    view = load_view(store_copy)
    names = dict(zip(view.frame["lora_id"], view.frame["name"]))
    members = set(result.members(chosen.cluster_id))
    listed = _detail_links(at)
    assert len(listed) == min(20, chosen.size)
    assert set(listed) <= {f"{literal(names[i])} — details" for i in members}
    assert any(f"{chosen.size:,} LoRAs, strongest first" in m.value for m in at.markdown)
    assert [s["type"] for s in spec(at)["layout"]["shapes"]] == ["path"]
    # a shared link opens the same region
    again = _map_page({"region": str(chosen.cluster_id)})
    assert _detail_links(again) == listed


def test_a_link_restores_a_box_selection_and_a_zoom(store_copy: Store, monkeypatch) -> None:
    cmap, _ = _mapped(store_copy, monkeypatch)
    xy = cmap.frame[["x", "y"]].to_numpy()
    x0, x1 = np.quantile(xy[:, 0], [0.4, 0.6])
    y0, y1 = np.quantile(xy[:, 1], [0.4, 0.6])
    inside = int(((xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)).sum())
    assert 0 < inside < 740
    at = _map_page({"box": f"{x0:.6g},{x1:.6g},{y0:.6g},{y1:.6g}", "view": "-1,1,-1,1"})
    assert f"Selected: {inside:,}" in [s.value for s in at.subheader]
    assert len(_detail_links(at)) == min(20, inside)
    fig = spec(at)
    assert fig["layout"]["xaxis"]["range"] == [-1, 1] and fig["layout"]["yaxis"]["range"] == [-1, 1]
    at.button(key="map_zoom_reset").click().run()
    assert "view" not in at.query_params and "range" not in spec(at)["layout"]["xaxis"]
    bad = _map_page({"view": "1,0,zz,1"})  # a hostile or broken link is refused, with a note
    assert any("Ignored the link" in c.value for c in bad.sidebar.caption)


def test_a_map_too_large_to_draw_is_a_density_with_a_sample(store_copy: Store, monkeypatch) -> None:
    _mapped(store_copy, monkeypatch)
    monkeypatch.setenv("CARLOS_MAP_MAX_POINTS", "300")
    monkeypatch.setenv("CARLOS_MAP_SAMPLE_POINTS", "100")
    at = _map_page()
    fig = spec(at)
    heat = [t for t in fig["data"] if t.get("type") == "heatmap"]
    counts = heat[0]["customdata"]  # LoRAs per cell: every LoRA is counted once
    assert len(heat) == 1 and int((values(counts) if isinstance(counts, dict) else np.asarray(counts)).sum()) == 740
    points = [t for t in fig["data"] if t.get("type") != "heatmap" and t["name"] != "region centres"]
    assert sum(len(t["customdata"]) for t in points) == 100
    assert all("drawn)" in t["name"] for t in points)  # the legend counts every LoRA, and says how many are drawn
    assert any("740 LoRAs in view: drawn as their density" in c.value for c in at.caption)


def test_detail_and_search_pages_say_which_region_a_lora_falls_in(store_copy: Store, monkeypatch) -> None:
    cmap, result = _mapped(store_copy, monkeypatch)
    region = dict(zip(result.assignment["lora_id"], result.assignment["cluster"]))
    # an upload behaving like Pixel Art XL is placed on it, and so falls in its region
    view = load_view(store_copy)
    upload = "sha256:" + "cd" * 32
    store_copy.loras.upsert([{"lora_id": upload, "source": "upload", "name": "my pixel upload"}])
    pixel = view.matrix[view.row_of("civitai:130580")]
    store_copy.reps.put(upload, CORPUS_EMBEDDER, pixel * 1.01, 4.0, 0.2, 16, {"protocol": "smoke", "backend": "tiny"})
    for lid in ("civitai:130580", upload):
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.query_params["lora"] = lid
        at.switch_page("pages/detail.py").run()
        assert not at.exception
        label = region["civitai:130580"]
        link = next(p.proto for p in at.get("page_link") if p.proto.label.startswith("On the map"))
        if label == clusters.NOISE_LABEL:
            assert link.label == "On the map: in no named region"
        else:
            assert link.label == f"On the map: region '{literal(label)}'"
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.query_params.update({"q": "pixel art", "r": "bm25", "k": "10"})
    at.switch_page("pages/search.py").run()
    assert not at.exception
    hits = next(d.value for d in at.dataframe if "region" in d.value.columns)
    assert len(hits) == 10 and hits.columns[:3].tolist() == ["rank", "score", "name"]
    assert mapview.regions_of(store_copy, load_view(store_copy), []) == {}
    expected = {**region, upload: region["civitai:130580"]}  # the upload lies where Pixel Art XL does
    ids = [unquote(link.split("lora=", 1)[1]) for link in hits["open"]]
    assert upload in ids  # its name says "pixel"
    assert hits["region"].tolist() == [expected[i] for i in ids]


def spec_of(at: AppTest, i: int) -> dict:
    return json.loads(at.get("plotly_chart")[i].proto.spec)
