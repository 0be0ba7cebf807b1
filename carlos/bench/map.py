"""Benchmark: the map at 10k / 100k / 1M LoRAs in headless Chromium, renderer against renderer.

For each size it builds a synthetic store with a cached map (:mod:`carlos.bench.map_data`:
real-shaped directions and values, **synthetic blob coordinates, not a UMAP fit**), serves it
and drives Chromium (``/usr/bin/chromium``, no GPU: WebGL is SwiftShader's software renderer):

* ``page``: the dashboard's Map page as shipped (Plotly ``scattergl`` of every point up to 100k
  in view, above that a density grid plus a 20k sample; selections answered on the server from
  every point). Timed: the first visitor's render (the server loads the view, the map and its
  regions), a second visitor's render, a box selection until its LoRAs are listed, a click on a
  region's bar in the legend until the region's LoRAs are listed, and "Zoom to selection" until the zoomed
  map is drawn; bytes the browser received over the websocket for one render.
* ``plotly-all``: every point in one ``scattergl`` (``bench/map_harness.py``): the same figure
  builder without the aggregation.
* ``atlas``: Apple's Embedding Atlas Streamlit component (``bench/map_harness.py``; needs
  ``pip install --no-deps embedding-atlas``). Its DuckDB-WASM, which it fetches from
  cdn.jsdelivr.net, is served from the wheel's own copy (the browser here has no internet).
  Timed until the component shows its point count; whether its embedding view drew is recorded.

A render counts as done when Streamlit's script has finished and the chart's plot is in the page;
each wait has ``timeout_s``. The tables are :mod:`carlos.bench.map_report`.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from carlos.bench.common import machine_info, stamp
from carlos.bench.synthetic import CorpusModel
from carlos.config import REPO_ROOT
from carlos.errors import InvalidInputError
from carlos.serving import free_port, serve, streamlit_command

RENDERERS = ("page", "plotly-all", "atlas")
HARNESS = REPO_ROOT / "bench" / "map_harness.py"
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
READY = '[data-testid="stApp"][data-test-script-state="notRunning"]'


@dataclass(frozen=True)
class MapBenchConfig:
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    renderers: tuple[str, ...] = RENDERERS
    regions: int = 30  # synthetic blobs (themes)
    seed: int = 0
    timeout_s: float = 600.0  # per wait in the browser
    chromium: str = "/usr/bin/chromium"
    workdir: str | None = None
    keep: bool = False

    def __post_init__(self) -> None:
        if not self.sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 1000 for n in self.sizes):
            raise InvalidInputError(f"sizes must be integers ≥ 1000, got {self.sizes!r}")
        unknown = set(self.renderers) - set(RENDERERS)
        if unknown or not self.renderers:
            raise InvalidInputError(f"unknown renderers {sorted(unknown)}; choose from {', '.join(RENDERERS)}")


def _build(db: str, n: int, regions: int, seed: int) -> dict[str, Any]:
    from carlos.bench.map_data import build_map_store
    from carlos.bench.scale import real_corpus

    m, s, c, _ = real_corpus(None)
    return build_map_store(db, n, CorpusModel.fit(m, s, c), regions=regions, seed=seed)


@contextmanager
def _serve(script: Path, env: dict[str, str], log: Path, timeout_s: float = 180.0) -> Iterator[str]:
    """``streamlit run script`` on a free loopback port; yields its URL, stops it after."""
    port = free_port()
    # --server.maxMessageSize (MB): plotly-all at 1M sends one very large figure
    command = streamlit_command(script, port, "--server.maxMessageSize", "2000")
    with serve(command, port, log, {**os.environ, **env}, timeout_s) as url:
        yield url


class Browser:
    """One headless Chromium with a websocket byte counter per page."""

    def __init__(self, executable: str, flags: list[str], route: Callable[[Any], None] | None = None) -> None:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=executable, args=flags)
        self.context = self.browser.new_context(viewport={"width": 1440, "height": 1100})
        self.external: list[str] = []
        if route is not None:
            self.context.route("**/*", route)

    def page(self) -> tuple[Any, list[int]]:
        page = self.context.new_page()
        received: list[int] = []
        page.on("websocket", lambda ws: ws.on("framereceived", lambda f: received.append(len(f) if isinstance(f, (str, bytes)) else 0)))
        return page, received

    def close(self) -> None:
        self.browser.close()
        self._pw.stop()


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return round(time.perf_counter() - t0, 2)


def _wait_chart(page: Any, timeout_ms: float) -> None:
    page.wait_for_selector('[data-testid="stPlotlyChart"] .js-plotly-plot .main-svg', timeout=timeout_ms)
    page.wait_for_selector(READY, timeout=timeout_ms)


def _wait_text(page: Any, text: str, timeout_ms: float) -> None:
    page.get_by_text(text).first.wait_for(timeout=timeout_ms)
    page.wait_for_selector(READY, timeout=timeout_ms)


def _drag_box(page: Any, share: float = 0.25) -> None:
    """A box over ``share`` of the plot's width and height, from its centre up-left."""
    bb = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first.bounding_box()
    x0, y0 = bb["x"] + bb["width"] * (0.5 - share / 2), bb["y"] + bb["height"] * (0.5 - share / 2)
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(x0 + bb["width"] * share * k / 10, y0 + bb["height"] * share * k / 10)
    page.mouse.up()


def _click_widest_bar(page: Any) -> None:
    """Click the top bar of the risk-mix chart (the largest region of the legend), after hovering
    it: Plotly selects what the pointer hovers."""
    bars = page.locator('[data-testid="stPlotlyChart"]').nth(1).locator(".barlayer path")
    bars.first.scroll_into_view_if_needed()
    bb = min((b for b in (bars.nth(i).bounding_box() for i in range(bars.count())) if b and b["width"] > 4), key=lambda b: b["y"])
    cx, cy = bb["x"] + bb["width"] / 2, bb["y"] + bb["height"] / 2
    page.mouse.move(cx, cy - 3)
    page.mouse.move(cx, cy, steps=3)
    time.sleep(0.3)
    page.mouse.click(cx, cy)


def _count(page: Any, pattern: str) -> int | None:
    m = re.search(pattern, page.locator('[data-testid="stMain"]').inner_text())
    return int(m.group(1).replace(",", "")) if m else None


def measure_page(url: str, browser: Browser, timeout_s: float) -> dict[str, Any]:
    """The Map page: first and second visitor, box selection, region click, zoom."""
    ms = timeout_s * 1000
    out: dict[str, Any] = {}
    first, _ = browser.page()
    out["first_render_s"] = _timed(lambda: (first.goto(f"{url}/map", timeout=ms), _wait_chart(first, ms)))
    first.close()
    page, received = browser.page()
    out["render_s"] = _timed(lambda: (page.goto(f"{url}/map", timeout=ms), _wait_chart(page, ms)))
    out["render_mb"] = round(sum(received) / 2**20, 1)
    text = page.locator('[data-testid="stMain"]').inner_text()
    out["density"] = "drawn as their density" in text
    out["labels"] = page.locator('[data-testid="stPlotlyChart"] .annotation').count()
    out["box_select_s"] = _timed(lambda: (_drag_box(page), _wait_text(page, "Selected:", ms)))
    out["box_selected"] = _count(page, r"Selected: ([\d,]+)")
    out["region_click_s"] = _timed(lambda: (_click_widest_bar(page), _wait_text(page, "strongest first", ms)))
    out["region_listed"] = _count(page, r"Region .*?: ([\d,]+) LoRAs, strongest first")
    zoom = page.get_by_role("button", name="Zoom to selection")
    out["zoom_s"] = _timed(lambda: (zoom.click(), page.wait_for_url(re.compile(r"view="), timeout=ms), _wait_chart(page, ms)))
    out["zoom_density"] = "drawn as their density" in page.locator('[data-testid="stMain"]').inner_text()
    out["url"] = page.url.split("?", 1)[-1]
    page.close()
    return out


def measure_plotly_all(url: str, browser: Browser, timeout_s: float) -> dict[str, Any]:
    ms = timeout_s * 1000
    out: dict[str, Any] = {}
    page, received = browser.page()
    try:
        out["render_s"] = _timed(lambda: (page.goto(url, timeout=ms), _wait_chart(page, ms)))
        out["render_mb"] = round(sum(received) / 2**20, 1)
        out["box_select_s"] = _timed(lambda: (_drag_box(page), _wait_text(page, "Selected:", ms)))
        out["box_selected"] = _count(page, r"Selected: ([\d,]+)")
    except Exception as e:  # a timeout or a crashed tab is the measurement
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    page.close()
    return out


def atlas_route(assets: Path, seen: list[str]) -> Callable[[Any], None]:
    """Serve the DuckDB-WASM files the component fetches from jsdelivr from the wheel's copy;
    let loopback through, refuse anything else (and remember it)."""
    files = {
        "duckdb-eh.wasm": "duckdb-eh-*.wasm",
        "duckdb-browser-eh.worker.js": "duckdb-browser-eh.worker-*.js",
        "duckdb-mvp.wasm": "duckdb-mvp-*.wasm",
        "duckdb-browser-mvp.worker.js": "duckdb-browser-mvp.worker-*.js",
    }

    def route(r: Any) -> None:
        u = r.request.url
        if u.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")):
            r.continue_()
            return
        seen.append(u)
        name = u.rsplit("/", 1)[-1]
        found = sorted(assets.glob(files[name])) if name in files else []
        if found:
            kind = "application/wasm" if name.endswith(".wasm") else "text/javascript"
            r.fulfill(status=200, body=found[0].read_bytes(), headers={"content-type": kind, "access-control-allow-origin": "*"})
        else:
            r.abort()

    return route


def measure_atlas(url: str, browser: Browser, n: int, timeout_s: float) -> dict[str, Any]:
    ms = timeout_s * 1000
    out: dict[str, Any] = {}
    page, received = browser.page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    try:
        frame = page.frame_locator("iframe").first
        out["render_s"] = _timed(lambda: (page.goto(url, timeout=ms), frame.get_by_text(f"{n:,} points").first.wait_for(timeout=ms)))
        out["render_mb"] = round(sum(received) / 2**20, 1)
        time.sleep(2.0)
        unavailable = frame.get_by_text("WebGPU is unavailable").count() > 0
        why = next((c for c in console if "WebGPU" in c and "support" in c), "WebGPU unavailable")
        out["embedding_view"] = f"not drawn: {why}" if unavailable else "drawn"
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    page.close()
    return out


def _atlas_assets() -> Path | None:
    try:
        import embedding_atlas
    except ImportError:
        return None
    return Path(embedding_atlas.__file__).parent / "static" / "assets"


def run_map_bench(config: MapBenchConfig | None = None, *, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Every renderer at every size; a JSON-ready dict."""
    cfg = config or MapBenchConfig()
    if not Path(cfg.chromium).exists():
        raise InvalidInputError(f"no Chromium at {cfg.chromium}: `sh scripts/install-chromium.sh` installs Debian's")
    info = machine_info()
    root = Path(cfg.workdir) if cfg.workdir else Path(tempfile.mkdtemp(prefix="carlos-bench-map-"))
    root.mkdir(parents=True, exist_ok=True)
    assets = _atlas_assets()
    rows: list[dict[str, Any]] = []
    steps, done = len(cfg.sizes) * len(cfg.renderers), 0
    try:
        for n in cfg.sizes:
            db = root / f"map-{n}.duckdb"
            for p in root.glob(f"map-{n}.*"):
                p.unlink()
            with multiprocessing.get_context("spawn").Pool(1) as pool:  # its peak memory is its own
                row: dict[str, Any] = {"n": n, "build": pool.apply(_build, (str(db), n, cfg.regions, cfg.seed))}
            parquet = str(db.with_suffix(".points.parquet"))
            for renderer in cfg.renderers:
                log = root / f"server-{n}-{renderer}.log"
                if renderer == "atlas" and assets is None:
                    row[renderer] = {"skipped": "embedding-atlas is not installed (pip install --no-deps embedding-atlas==0.26.0)"}
                elif renderer == "page":
                    browser = Browser(cfg.chromium, BROWSER_FLAGS)
                    with _serve(REPO_ROOT / "streamlit_app.py", {"CARLOS_DB": str(db), "CARLOS_REVIEWER": "bench"}, log) as url:
                        row[renderer] = measure_page(url, browser, cfg.timeout_s)
                    browser.close()
                else:
                    env = {"CARLOS_MAP_POINTS": parquet, "CARLOS_MAP_RENDERER": renderer}
                    seen: list[str] = []
                    route = atlas_route(assets, seen) if renderer == "atlas" and assets is not None else None
                    flags = BROWSER_FLAGS + (["--enable-unsafe-webgpu"] if renderer == "atlas" else [])
                    browser = Browser(cfg.chromium, flags, route)
                    with _serve(HARNESS, env, log) as url:
                        if renderer == "atlas":
                            result = measure_atlas(url, browser, n, cfg.timeout_s)
                        else:
                            result = measure_plotly_all(url, browser, cfg.timeout_s)
                    browser.close()
                    if renderer == "atlas":
                        result["external_requests"] = sorted(set(seen))
                    row[renderer] = result
                done += 1
                if progress:
                    progress(done, steps)
            rows.append(row)
            if not cfg.keep:
                for p in root.glob(f"map-{n}.*"):
                    p.unlink()
    finally:
        if not cfg.keep and not cfg.workdir:
            shutil.rmtree(root, ignore_errors=True)
    chromium = _chromium_version(cfg.chromium)
    return {"benchmark": "map", "when": stamp(), "machine": info, "chromium": chromium, "config": asdict(cfg), "sizes": rows}


def _chromium_version(path: str) -> str:
    try:
        return subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
