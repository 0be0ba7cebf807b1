"""Refresh the README's screenshots (docs/screenshots/) from the dashboard on the real store.

    make screenshots     # = PYTHONPATH=. .venv/bin/python scripts/screenshots.py [--db data/carlos.duckdb]

Serves the dashboard read-only on a free loopback port (a visitor, so nothing is written), opens
each page with a shareable link in headless Chromium at 1440 px and saves one PNG per page. Needs
`make store` (the corpus and its map, fitted at import) and `make browser`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from carlos.config import REPO_ROOT
from carlos.serving import free_port, serve, streamlit_command

OUT = REPO_ROOT / "docs" / "screenshots"
READY = '[data-testid="stApp"][data-test-script-state="notRunning"]'
#: file name -> (page path with its link, what must be on the page before the shot)
SHOTS = {
    "search.png": ("search?q=pixel+art&r=behaviour&k=10&cmp=1", "BM25 over name"),
    "risk.png": ("risk", "Strength"),
    "map.png": ("map", "Regions"),
    "detail.png": ("detail?lora=130580", "Pixel Art XL"),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default=str(REPO_ROOT / "data" / "carlos.duckdb"))
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # a copy: the screenshots must not depend on, or touch, the working store
    tmp = Path(tempfile.mkdtemp(prefix="carlos-shots-"))
    db = tmp / "carlos.duckdb"
    shutil.copy(args.db, db)
    env = {**os.environ, "CARLOS_DB": str(db), "CARLOS_REVIEWER": "screenshots"}
    try:
        with serve(streamlit_command("streamlit_app.py", port), port, tmp / "server.log", env, timeout_s=300) as url:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                for name, (path, text) in SHOTS.items():
                    page.goto(f"{url}/{path}", timeout=300_000)
                    page.wait_for_selector(READY, timeout=300_000)
                    page.get_by_text(text).first.wait_for(timeout=300_000)
                    page.wait_for_selector(READY, timeout=300_000)
                    page.wait_for_timeout(1500)  # Plotly's and the grid's last paint
                    page.screenshot(path=str(OUT / name))
                    print(f"wrote {OUT / name}", file=sys.stderr)
                browser.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
