"""AppTest: an upload with stored intervals gets interval columns and an error-bar figure on
the detail page and error bars on the risk scatter; corpus LoRAs say they have no interval."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from carlos.config import CORPUS_EMBEDDER, REPO_ROOT
from carlos.core.confidence import NO_INTERVAL
from carlos.core.uncertainty import estimate
from carlos.store.catalog import load_view
from carlos.store.store import Store

APP = str(REPO_ROOT / "streamlit_app.py")
UPLOAD = "sha256:" + "cd" * 32


def _upload_with_intervals(store: Store) -> dict:
    """An upload in the corpus space behaving like Pixel Art XL, with a quick-sized run's intervals."""
    pixel = load_view(store).matrix[load_view(store).row_of("civitai:130580")].astype(np.float64)
    rng = np.random.default_rng(0)
    diffs = pixel + rng.normal(0, 0.15, size=(35, 1, pixel.size)) + rng.normal(0, 0.15, size=(35, 2, pixel.size))
    diffs = diffs.reshape(70, -1)
    u = estimate(diffs, [f"p{i // 2}" for i in range(70)])
    store.loras.upsert([{"lora_id": UPLOAD, "source": "upload", "name": "my pixel upload"}])
    store.reps.put(
        UPLOAD,
        CORPUS_EMBEDDER,
        diffs.mean(axis=0),
        u.strength,
        u.consistency,
        70,
        {"protocol": "quick", "backend": "tiny", "source": "characterized", "uncertainty": u.to_dict()},
    )
    return u.to_dict()


def _values(v):
    """Plotly's JSON keeps numeric arrays as base64 typed arrays."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return v


def _open(db: Path, page: str, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("CARLOS_DB", str(db))
    monkeypatch.setenv("CARLOS_REVIEWER", "ada")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.query_params.update(params)
    return at.switch_page(page).run()


def test_detail_page_shows_intervals_and_the_error_bar_figure(store_copy: Store, monkeypatch) -> None:
    u = _upload_with_intervals(store_copy)
    at = _open(store_copy.path, "pages/detail.py", monkeypatch, lora=UPLOAD)
    assert not at.exception and not at.error
    reps = next(t.value for t in at.dataframe if "space" in t.value.columns)
    lo, hi = u["strength_interval"]
    assert reps["Str 95%"][0] == f"{lo:.3f}–{hi:.3f}"
    assert reps["Risk (confidence)"][0].startswith(("uncertain: ", "low risk", "review", "too strong", "too unstable"))
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    bars = fig["data"][0]
    assert bars["error_x"]["type"] == "data" and _values(bars["y"])[0].startswith("quick · tiny · ")
    assert any("95% intervals of the full-protocol values" in c.value for c in at.caption)


def test_corpus_lora_detail_says_no_interval(real_store_path: Path, monkeypatch) -> None:
    at = _open(real_store_path, "pages/detail.py", monkeypatch, lora="civitai:130580")
    reps = next(t.value for t in at.dataframe if "space" in t.value.columns)
    assert reps["Str 95%"][0] == "—" and reps["Risk (confidence)"][0] == NO_INTERVAL
    assert len(at.get("plotly_chart")) == 0  # no error-bar figure without per-pair data


def test_risk_scatter_draws_error_bars_for_the_upload(store_copy: Store, monkeypatch) -> None:
    u = _upload_with_intervals(store_copy)
    at = _open(store_copy.path, "pages/risk.py", monkeypatch)
    assert not at.exception and not at.error
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    bars = [t for t in spec["data"] if t["name"].startswith("95% intervals")]
    assert len(bars) == 1 and [c[0] for c in bars[0]["customdata"]] == [UPLOAD]
    s_hi = u["strength_interval"][1]
    assert _values(bars[0]["error_x"]["array"])[0] == pytest.approx(s_hi - u["strength"], rel=1e-6)
    assert any("95% intervals of the 1 upload" in c.value for c in at.caption)
