"""One read per render: every page opens at most two store connections per render (it opened up
to 16 before page models), and a write by another process shows on the very next rerun."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from carlos.config import REPO_ROOT
from carlos.store.store import Store

APP = str(REPO_ROOT / "streamlit_app.py")
PIXEL = "civitai:130580"
#: Each page with a link that makes it show its real content (not its empty state).
PAGES = {
    "overview": {},
    "search": {"q": "pixel art", "r": "behaviour"},
    "risk": {},
    "map": {},
    "detail": {"lora": "130580"},
    "characterize": {},
    "evaluation": {},
    "review": {"status": "unreviewed,flagged"},
}
MAX_CONNECTIONS = 2


def open_page(db: Path, monkeypatch: pytest.MonkeyPatch, page: str, params: dict[str, str]) -> AppTest:
    monkeypatch.setenv("CARLOS_DB", str(db))
    monkeypatch.setenv("CARLOS_REVIEWER", "ada")
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.query_params.update(params)
    return at.switch_page(f"pages/{page}.py").run()


def connections_of(at: AppTest) -> int:
    before = Store.connections_opened
    at.run()
    assert not at.exception, at.exception
    return Store.connections_opened - before


def test_the_counter_counts_connections(store_copy: Store) -> None:
    before = Store.connections_opened
    store_copy.loras.resolve(PIXEL)
    store_copy.review.status_of(PIXEL)
    with store_copy.session():  # nested calls share the session's connection
        store_copy.loras.resolve(PIXEL)
        store_copy.review.status_of(PIXEL)
    assert Store.connections_opened - before == 3


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_renders_on_at_most_two_connections(store_copy: Store, monkeypatch, page: str) -> None:
    at = open_page(store_copy.path, monkeypatch, page, PAGES[page])
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    store_copy.review.append_decision("civitai:160844", "bob", "flag", "unreviewed", "flagged", None)  # the store changed
    assert connections_of(at) <= MAX_CONNECTIONS
    assert connections_of(at) == 0  # unchanged since: the page's read is remembered, no connection at all


def test_detail_of_a_characterized_upload_with_a_decision(store_copy: Store, monkeypatch) -> None:
    """The busiest detail page: per-pair results, thumbnails, a claim and a decision history."""
    job = store_copy.jobs.enqueue(PIXEL, "/tmp/x.safetensors", "tiny", "smoke", 2, {}, "ada")
    rng = np.random.default_rng(0)
    store_copy.jobs.add_pair_results(
        job, [{"pair_index": i, "prompt": "p", "category": "Food", "seed": i, "diff": rng.normal(size=8)} for i in range(2)]
    )
    store_copy.review.append_decision(PIXEL, "bob", "flag", "unreviewed", "flagged", "style copy")
    store_copy.review.claim(PIXEL, "bob")
    at = open_page(store_copy.path, monkeypatch, "detail", {"lora": PIXEL})
    assert {m.label: m.value for m in at.metric}["Review status"] == "flagged"
    assert any("Claimed by bob" in i.value for i in at.info)
    assert connections_of(at) <= MAX_CONNECTIONS


WRITER = """
import sys
import numpy as np
from carlos.store.store import Store
store = Store.open(sys.argv[1])
store.loras.upsert([{"lora_id": "upload:from-a-worker", "source": "upload", "name": "Written by another process"}])
rep = store.reps.of("civitai:130580")[0]
prov = {"protocol": "quick", "backend": "sdxl"}
store.reps.put("upload:from-a-worker", rep.embedder, np.asarray(rep.direction) * 0.5, 1.25, 0.2, 70, prov)
"""


def test_another_process_write_shows_on_the_next_rerun(store_copy: Store, monkeypatch) -> None:
    """The data-version stamp: a worker's result appears without a restart, although the pages
    remember their derived frames per data version."""
    at = open_page(store_copy.path, monkeypatch, "overview", {})
    loras = lambda: {m.label: m.value for m in at.metric}["LoRAs"]  # noqa: E731
    assert loras() == "740"
    subprocess.run([sys.executable, "-c", WRITER, str(store_copy.path)], cwd=REPO_ROOT, check=True, timeout=120)
    at.run()
    assert loras() == "741"
    at.query_params["lora"] = "upload:from-a-worker"
    at.switch_page("pages/detail.py").run()
    assert [t.value for t in at.title] == ["Written by another process"]
    reps = next(t.value for t in at.dataframe if "space" in t.value.columns)
    assert reps["Strength"][0] == pytest.approx(1.25)


def test_a_workers_writes_leave_the_pages_that_do_not_show_them_cached(store_copy: Store, monkeypatch) -> None:
    """A worker writes pair results and heartbeats every few seconds: the risk page and the detail
    page of a LoRA it is not characterizing read nothing of them, so they stay cached; the detail
    page of the LoRA being characterized reads again."""
    job = store_copy.jobs.enqueue(PIXEL, "/tmp/x.safetensors", "tiny", "smoke", 4, {}, "ada")
    pages = {
        "risk": open_page(store_copy.path, monkeypatch, "risk", {}),
        "other": open_page(store_copy.path, monkeypatch, "detail", {"lora": "civitai:160844"}),
        "busy": open_page(store_copy.path, monkeypatch, "detail", {"lora": PIXEL}),
    }
    for at in pages.values():
        connections_of(at)
    rng = np.random.default_rng(1)
    store_copy.jobs.heartbeat(job, "w1")
    store_copy.jobs.add_pair_results(job, [{"pair_index": 0, "prompt": "p", "category": "Food", "seed": 0, "diff": rng.normal(size=8)}])
    assert connections_of(pages["risk"]) == 0
    assert connections_of(pages["other"]) <= 1  # at most the shared "which LoRAs have jobs" (once per process and jobs state)
    assert connections_of(pages["other"]) == 0
    assert 1 <= connections_of(pages["busy"]) <= MAX_CONNECTIONS
    assert any(s.value == "Per-category Strength" for s in pages["busy"].subheader)  # its new pair is shown
