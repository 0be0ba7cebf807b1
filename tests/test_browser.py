"""Browser test: the README's run command serves every page; headless Chromium renders each
without an error element and saves a screenshot to artifacts/screenshots/. A LoRA whose creator
text is hostile Markdown/HTML renders as plain text and makes the browser fetch nothing."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from carlos.config import REPO_ROOT
from carlos.serving import free_port, serve, streamlit_command

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO_ROOT / "artifacts" / "screenshots"
#: Shareable-link parameters that make a page show real content instead of its empty state.
QUERIES = {"detail": "?lora=130580", "search": "?q=pixel+art&r=behaviour&k=10&cmp=1"}


def _pages() -> list[str]:
    """Every page's url path, from the one list the navigation is built from."""
    from app.navigation import PAGES

    return [url_path for *_, url_path in PAGES]


@pytest.fixture(scope="module")
def server(real_store_path: Path, tmp_path_factory: pytest.TempPathFactory):
    db = tmp_path_factory.mktemp("browser") / "carlos.duckdb"
    shutil.copy(real_store_path, db)
    port = free_port()
    env = {**os.environ, "CARLOS_DB": str(db), "PORT": str(port), "CARLOS_REVIEWER": "browser-test"}
    with serve(["make", "run", f"PORT={port}"], port, db.parent / "server.log", env, timeout_s=300) as url:
        yield url


def test_every_page_renders_without_errors(server: str) -> None:
    from playwright.sync_api import sync_playwright

    pages = _pages()
    assert len(pages) >= 5, pages
    SHOTS.mkdir(parents=True, exist_ok=True)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        for path in pages:
            page.goto(f"{server}/{path}{QUERIES.get(path, '')}", wait_until="networkidle", timeout=120_000)
            page.wait_for_selector('[data-testid="stMain"]', timeout=120_000)
            # the app root says when the page's script has finished (UMAP may take a while)
            page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=240_000)
            page.wait_for_load_state("networkidle")
            for grid in page.locator('[data-testid="stDataFrame"]').all():  # canvas grids draw lazily
                grid.scroll_into_view_if_needed()
            page.mouse.wheel(0, -100_000)
            time.sleep(0.5)  # the grids' canvases draw for the screenshot
            errors = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
            text = page.locator('[data-testid="stMain"]').inner_text()
            page.screenshot(path=str(SHOTS / f"{path}.png"), full_page=True)
            assert errors.count() == 0, f"{path}: {errors.first.inner_text()[:500]}"
            assert "Traceback" not in text, f"{path} shows a traceback"
            assert len(text.strip()) > 40, f"{path} rendered almost nothing: {text!r}"
        browser.close()


def test_upload_is_validated_characterized_and_shown(server: str, tmp_path: Path) -> None:
    """The Characterize page end to end in a browser: upload a tiny LoRA, read the validation
    report, enqueue, and watch the dashboard's worker finish the job."""
    from playwright.sync_api import sync_playwright

    from carlos.files.testing import make_test_lora

    lora = make_test_lora(tmp_path / "browser-demo.safetensors", seed=21)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(f"{server}/characterize", wait_until="networkidle", timeout=120_000)
        page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=120_000)
        page.locator('input[type="file"]').set_input_files(str(lora))
        page.get_by_text("Validation report").wait_for(timeout=120_000)
        page.get_by_text("LoRA for SDXL").first.wait_for(timeout=60_000)
        page.get_by_role("button", name="Enqueue characterization").click()
        page.get_by_text("finished").first.wait_for(timeout=300_000)
        page.get_by_text("Strength").first.wait_for(timeout=30_000)
        time.sleep(1.0)
        page.screenshot(path=str(SHOTS / "characterize-finished.png"), full_page=True)
        errors = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
        assert errors.count() == 0, errors.first.inner_text()[:500]
        browser.close()


# --- hostile creator text ---------------------------------------------------------------------------
HOSTILE_ID = "sha256:" + "e1" * 32
MARK = "zyxhostile"
WORD_JOINER = "\u2060"  # what carlos.core.untrusted inserts to break emoji/autolink patterns: invisible


def _hostile(port: int) -> str:
    """A Markdown link to javascript:, a Markdown image and an <img> on the counting server,
    HTML emphasis, a spreadsheet formula, LaTeX, an emoji shortcode and a colour directive."""
    return (
        f'=HYPERLINK("http://evil","x") {MARK} [click](javascript:alert(1)) ![x](http://127.0.0.1:{port}/pixel.png) '
        f'<b>bold</b> <img src="http://127.0.0.1:{port}/img.png"> :red[colour] $x^2$ :smile: www.evil.example'
    )


class _Counter(BaseHTTPRequestHandler):
    """Counts every request (a fetched tracking pixel would be one) and answers 404."""

    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hostile_server(real_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, list[str]]]:
    """(dashboard URL, hostile text, requests the loopback server received): the dashboard on a
    store copy with one upload whose name, description, trigger word and metadata are hostile."""
    from carlos.config import CORPUS_EMBEDDER
    from carlos.store.catalog import load_view
    from carlos.store.store import Store

    pixel = ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    threading.Thread(target=pixel.serve_forever, daemon=True).start()
    text = _hostile(pixel.server_address[1])
    db = tmp_path_factory.mktemp("hostile-browser") / "carlos.duckdb"
    shutil.copy(real_store_path, db)
    store = Store.open(db)
    report = {"format": "kohya", "base_family": "sdxl", "rank": 4, "trigger_words": [text], "contradictions": [f"declares {text}"]}
    report["metadata"] = {"modelspec.title": text}
    row = {"lora_id": HOSTILE_ID, "source": "upload", "name": text, "description": f"<p>{text}</p>", "sha256": HOSTILE_ID[7:]}
    store.loras.upsert([{**row, "file_report": report, "trigger_words": [text], "folder_name": text}])
    view = load_view(store)
    store.reps.put(HOSTILE_ID, CORPUS_EMBEDDER, view.matrix[view.row_of("civitai:130580")] * 1.01, 4.0, 0.2, 16, {"protocol": "smoke"})
    port = free_port()
    env = {**os.environ, "CARLOS_DB": str(db), "CARLOS_REVIEWER": "browser-test"}
    try:
        with serve(streamlit_command("streamlit_app.py", port), port, db.parent / "server.log", env) as url:
            yield url, text, _Counter.hits
    finally:
        pixel.shutdown()


#: Per element showing the hostile text: the tags inside it, links (their href), images (src).
_INSPECT = """mark => Array.from(document.querySelectorAll('h1, h2, h3, p, li, summary, label, pre, [data-testid="stAlert"]'))
    .filter(e => e.textContent.includes(mark))
    .map(e => ({
        text: e.innerText,
        tags: Array.from(e.querySelectorAll('a, img, b, strong, em, del, code, span.katex, iframe, script, svg, [class*="Colored"]'))
            .filter(c => !(c.tagName === 'A' && (c.getAttribute('href') || '').startsWith('#')))
            .filter(c => !(c.tagName === 'svg' && c.closest('a[href^="#"]')))
            .map(c => c.tagName.toLowerCase() + ' ' + (c.getAttribute('href') || c.getAttribute('src') || '')),
    }))"""


def test_hostile_creator_text_renders_as_text_and_fetches_nothing(hostile_server: tuple[str, str, list[str]]) -> None:
    """Detail page (title, warning, description, metadata, declared trigger words) and a search
    hit on it: no <a>, <img>, <b>, LaTeX or coloured span from the text, its characters visible,
    and the loopback server that its images point at never asked for anything."""
    from playwright.sync_api import sync_playwright

    url, text, hits = hostile_server
    SHOTS.mkdir(parents=True, exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(f"{url}/detail?lora={HOSTILE_ID}", wait_until="networkidle", timeout=120_000)
        page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=120_000)
        for summary in page.locator('[data-testid="stExpander"] summary').all():  # description, metadata
            summary.click()
        page.wait_for_load_state("networkidle")
        page.mouse.wheel(0, -100_000)
        time.sleep(1.5)
        page.screenshot(path=str(SHOTS / "detail-hostile.png"), full_page=True)
        shown = page.evaluate(_INSPECT, MARK)
        title = page.locator("h1").filter(has_text=MARK).first.inner_text().replace(WORD_JOINER, "")
        main = page.locator('[data-testid="stMain"]').inner_text().replace(WORD_JOINER, "")
        anywhere = page.evaluate(
            """() => ({
                links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))
                    .filter(h => !h.startsWith('#') && /javascript:|127\\.0\\.0\\.1|evil/i.test(h)),  // '#…': a heading's own anchor
                images: Array.from(document.querySelectorAll('img[src]')).map(i => i.getAttribute('src'))
                    .filter(s => s.includes('127.0.0.1')),
                bold: Array.from(document.querySelectorAll('b, strong')).filter(b => b.textContent.trim() === 'bold').length,
                latex: document.querySelectorAll('.katex').length,
            })"""
        )
        page.goto(f"{url}/search?q={MARK}&r=bm25", wait_until="networkidle", timeout=120_000)
        page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=120_000)
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=60_000)
        page.wait_for_load_state("networkidle")
        time.sleep(1.5)
        search_images = page.evaluate("() => Array.from(document.images).map(i => i.src).filter(s => s.includes('127.0.0.1'))")
        errors = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').count()
        browser.close()
    assert title == text, title
    assert text in main and "😄" not in main  # its characters, and no emoji made of them
    assert len(shown) >= 3, shown  # the title, the contradiction warning, the description at least
    assert all(not s["tags"] for s in shown), [s for s in shown if s["tags"]]
    assert anywhere == {"links": [], "images": [], "bold": 0, "latex": 0}, anywhere
    assert search_images == [] and errors == 0
    assert hits == [], hits  # nothing was fetched from the address its images name
