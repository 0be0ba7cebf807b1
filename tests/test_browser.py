"""Browser test: the README's run command serves every page; headless Chromium renders each
without an error element and saves a screenshot to artifacts/screenshots/."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from carlos.config import REPO_ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO_ROOT / "artifacts" / "screenshots"
#: Shareable-link parameters that make a page show real content instead of its empty state.
QUERIES = {"detail": "?lora=130580", "search": "?q=pixel+art&r=behaviour&k=10&cmp=1"}


def _pages() -> list[str]:
    """Every page's url path, from the one list the navigation is built from."""
    from app.navigation import PAGES

    return [url_path for *_, url_path in PAGES]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(real_store_path: Path, tmp_path_factory: pytest.TempPathFactory):
    db = tmp_path_factory.mktemp("browser") / "carlos.duckdb"
    shutil.copy(real_store_path, db)
    port = _free_port()
    env = {**os.environ, "CARLOS_DB": str(db), "PORT": str(port), "CARLOS_REVIEWER": "browser-test"}
    log = open(db.parent / "server.log", "w")  # noqa: SIM115 - open for the server's lifetime
    proc = subprocess.Popen(
        ["make", "run", f"PORT={port}"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.flush()
            raise AssertionError("dashboard did not start:\n" + (db.parent / "server.log").read_text()[-3000:])
        time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


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
            time.sleep(2.0)
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
