"""Browser test of ``make serve``'s topology: two Streamlit processes behind HAProxy on a copy of
the real store. Headless Chromium, through the proxy only, uploads a LoRA on the Characterize page
and sees its validation (the upload must reach the process holding the session), runs a search
and sees its results; its cookie keeps it on one process; when that process is killed, the
health check takes it out and the same browser is served by the other one."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from carlos.serving import ServeConfig, Topology, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]
DONE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


@pytest.fixture(scope="module")
def topology(real_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    root = tmp_path_factory.mktemp("replicas")
    db = root / "carlos.duckdb"
    shutil.copy(real_store_path, db)
    env = {**os.environ, "CARLOS_DB": str(db), "CARLOS_REVIEWER": "browser-test"}
    env.pop("CARLOS_REVIEWERS", None)
    cfg = ServeConfig(workers=2, port=free_port(), env=env, run_dir=root / "run", check_interval_ms=500)
    with Topology(cfg) as topo:
        yield topo


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _server_of(context: object) -> str:
    return next(c["value"] for c in context.cookies() if c["name"] == "SRV")


def _open(context: object, url: str) -> object:
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded", timeout=120_000)
    page.wait_for_selector(DONE, timeout=180_000)
    return page


def test_upload_through_the_proxy_reaches_the_session_and_is_validated(topology: Topology, browser: object, tmp_path: Path) -> None:
    from carlos.files.testing import make_test_lora

    lora = make_test_lora(tmp_path / "replica-upload.safetensors", seed=33)
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = _open(context, f"{topology.url}/characterize")
    assert _server_of(context) in ("s1", "s2")  # the proxy pinned this browser to one process
    page.locator('input[type="file"]').set_input_files(str(lora))  # PUT /_stcore/upload_file/<session>/…
    page.get_by_text("Validation report").wait_for(timeout=120_000)
    page.get_by_text("LoRA for SDXL").first.wait_for(timeout=60_000)
    assert page.locator(ERRORS).count() == 0, page.locator(ERRORS).first.inner_text()[:500]
    context.close()


def test_search_through_the_proxy_shows_results(topology: Topology, browser: object) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = _open(context, f"{topology.url}/search?q=pixel+art&r=behaviour&k=10")
    page.get_by_role("heading", name=re.compile(r": 10 results")).wait_for(timeout=60_000)
    cell = page.locator('[data-testid="stDataFrame"] [role="gridcell"]', has_text="Pixel Art XL")  # drawn on a canvas: hidden cells
    cell.first.wait_for(state="attached", timeout=30_000)
    assert page.locator(ERRORS).count() == 0, page.locator(ERRORS).first.inner_text()[:500]
    context.close()


def test_a_browser_stays_on_its_process_and_moves_when_it_dies(topology: Topology, browser: object) -> None:
    """Runs last: it kills a process of the module's topology."""
    context = browser.new_context()
    page = _open(context, f"{topology.url}/overview")
    mine = _server_of(context)
    for _ in range(2):
        page.reload(wait_until="domcontentloaded")
        page.wait_for_selector(DONE, timeout=120_000)
        assert _server_of(context) == mine  # every load, websocket included, on the same process
    other = "s2" if mine == "s1" else "s1"
    assert topology.states() == {"s1": "UP", "s2": "UP"}
    victim = next(r for r in topology.replicas if r.name == mine)
    os.killpg(victim.proc.pid, signal.SIGKILL)
    t0 = time.monotonic()
    topology.wait_until(lambda s: s[mine] == "DOWN" and s[other] == "UP", timeout_s=20)
    assert time.monotonic() - t0 < 10  # two failed checks 0.5 s apart, and some slack
    page.reload(wait_until="domcontentloaded")
    page.wait_for_selector(DONE, timeout=120_000)
    assert _server_of(context) == other  # redispatched, the cookie rewritten
    assert page.locator('[data-testid="stMain"]').inner_text().strip()
    assert page.locator(ERRORS).count() == 0
    context.close()
