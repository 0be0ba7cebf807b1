"""Browser test of the map with its named regions: the dashboard over a copy of the corpus store
with a cached map, in headless Chromium. The Map page draws the region labels, a click on a
region's bar in the legend lists that region's LoRAs with links, a box selection lists the LoRAs
inside it, and both go into the address bar. CJK names need a font that has their glyphs.

The map here is the directions on their two leading principal axes, cached the way `corpus
import` caches the UMAP map (a UMAP fit costs ~1 minute on this VM; what is tested is what the
page draws from a cached map). Screenshot: artifacts/screenshots/map-regions.png."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from carlos.config import REPO_ROOT
from carlos.serving import free_port, serve, streamlit_command

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO_ROOT / "artifacts" / "screenshots"
READY = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def _pca_fit(matrix: np.ndarray, config: object) -> tuple[None, np.ndarray]:
    x = matrix - matrix.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return None, (x @ vt[:2].T).astype(np.float64)


@pytest.fixture(scope="module")
def map_server(real_store_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """(dashboard URL, the map's regions, lora id -> name) over a store copy with a cached map."""
    from carlos.store.catalog import load_view
    from carlos.store.store import Store
    from carlos.viz import clusters, maps

    db = tmp_path_factory.mktemp("browser-map") / "carlos.duckdb"
    shutil.copy(real_store_path, db)
    store = Store.open(db)
    view = load_view(store)
    real_fit = maps.fit_umap
    maps.fit_umap = _pca_fit  # type: ignore[assignment]
    try:
        cmap = maps.import_map(store, view)
    finally:
        maps.fit_umap = real_fit  # type: ignore[assignment]
    result = clusters.corpus_clusters(store, view, cmap)
    port = free_port()
    env = {**os.environ, "CARLOS_DB": str(db), "CARLOS_REVIEWER": "browser-test"}
    with serve(streamlit_command("streamlit_app.py", port), port, db.parent / "server.log", env) as url:
        yield url, result, dict(zip(view.frame["lora_id"], view.frame["name"]))


def test_a_cjk_font_is_installed_for_the_browser() -> None:
    """Without one, Chinese and Japanese LoRA names are empty boxes (scripts/install-chromium.sh)."""
    out = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=False).stdout
    assert "Noto Sans CJK" in out, "no CJK font: `sh scripts/install-chromium.sh` installs fonts-noto-cjk"


def test_the_map_shows_region_labels_and_a_region_lists_its_loras(map_server) -> None:
    from playwright.sync_api import sync_playwright

    from carlos.core.untrusted import WORD_JOINER

    url, result, names = map_server
    labels = {c.label for c in result.clusters if c.cluster_id >= 0}
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page(viewport={"width": 1440, "height": 1100})
        page.goto(f"{url}/map", wait_until="networkidle", timeout=120_000)
        page.wait_for_selector('[data-testid="stPlotlyChart"] .js-plotly-plot .main-svg', timeout=120_000)
        page.wait_for_selector(READY, timeout=120_000)
        drawn = [t.strip() for t in page.locator('[data-testid="stPlotlyChart"]').first.locator(".annotation-text").all_text_contents()]
        assert len(drawn) >= 3 and set(drawn) <= labels, drawn
        page.screenshot(path=str(SHOTS / "map-regions.png"))

        # the legend: a click on the top bar (the largest region) lists that region's LoRAs
        bars = page.locator('[data-testid="stPlotlyChart"]').nth(1).locator(".barlayer path")
        bars.first.scroll_into_view_if_needed()
        boxes = [b for b in (bars.nth(i).bounding_box() for i in range(bars.count())) if b and b["width"] > 4]
        top = min(boxes, key=lambda b: b["y"])
        cx, cy = top["x"] + top["width"] / 2, top["y"] + top["height"] / 2
        page.mouse.move(cx, cy - 3)
        page.mouse.move(cx, cy, steps=3)
        time.sleep(0.3)
        page.mouse.click(cx, cy)
        page.get_by_text("strongest first").first.wait_for(timeout=60_000)
        page.wait_for_selector(READY, timeout=60_000)
        biggest = result.clusters[0]
        assert f"region={biggest.cluster_id}" in page.url
        members = {" ".join(names[i].split()) for i in result.members(biggest.cluster_id)}  # shown on one line
        links = page.locator('[data-testid="stPageLink"] a[href*="detail?lora="]')
        listed = [re.sub(r" — details$", "", t.replace(WORD_JOINER, "").strip()) for t in links.all_inner_texts()]
        assert len(listed) == min(20, biggest.size), listed
        assert set(listed) <= members, set(listed) - members

        # a box over the middle of the map lists the LoRAs inside it, and the link keeps it
        page.mouse.wheel(0, -10_000)
        drag = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first
        drag.scroll_into_view_if_needed()
        bb = drag.bounding_box()
        x0, y0 = bb["x"] + bb["width"] * 0.35, bb["y"] + bb["height"] * 0.35
        page.mouse.move(x0, y0)
        page.mouse.down()
        for k in range(1, 9):
            page.mouse.move(x0 + bb["width"] * 0.3 * k / 8, y0 + bb["height"] * 0.3 * k / 8)
        page.mouse.up()
        page.get_by_text("Selected:").first.wait_for(timeout=60_000)
        page.wait_for_selector(READY, timeout=60_000)
        assert "box=" in page.url
        selected = int(re.search(r"Selected: ([\d,]+)", page.locator('[data-testid="stMain"]').inner_text()).group(1).replace(",", ""))
        assert 0 < selected < 740
        errors = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
        assert errors.count() == 0
        browser.close()
