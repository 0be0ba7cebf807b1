"""AppTest of the LoRA detail page: metadata, representations, neighbours, local
characterization (per-category Strength, blurred image pairs), decisions and access."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from carlos.config import REPO_ROOT
from carlos.store.store import Store

APP = str(REPO_ROOT / "streamlit_app.py")
PIXEL = "civitai:130580"


def open_detail(db: Path, monkeypatch: pytest.MonkeyPatch, at: AppTest | None = None, **params: str) -> AppTest:
    monkeypatch.setenv("CARLOS_DB", str(db))
    monkeypatch.setenv("CARLOS_REVIEWER", "ada")
    at = (at if at is not None else AppTest.from_file(APP, default_timeout=60)).run()
    at.query_params.update(params)
    return at.switch_page("pages/detail.py").run()


def table_with(at: AppTest, column: str):
    return next(t.value for t in at.dataframe if column in t.value.columns)


def test_pixel_art_xl_and_its_pixel_art_neighbours(real_store_path: Path, monkeypatch) -> None:
    at = open_detail(real_store_path, monkeypatch, lora="130580")  # a Civitai version id works too
    assert not at.exception and not at.error
    assert [t.value for t in at.title] == ["Pixel Art XL"]
    assert at.query_params["lora"] == PIXEL
    assert any("https://civitai.com/models/120096?modelVersionId=130580" in c.value for c in at.caption)
    desc = at.expander[0].text[0].value
    assert desc.startswith("Pixel Art XL") and "<" not in desc and "ko-fi.com" not in desc
    reps = table_with(at, "space")
    assert list(reps["space"]) == ["ViT-B-32/openai"] and 0 < reps["Str pct"][0] <= 100
    assert reps["Strength"][0] == pytest.approx(4.742, abs=1e-3)
    nb = table_with(at, "rank")
    assert len(nb) == 10 and all("pixel" in n.lower() for n in nb["name"][:5]), list(nb["name"])
    assert PIXEL not in set(nb["details"]) and nb["score"].is_monotonic_decreasing
    assert any("No per-pair data" in c.value for c in at.caption)
    assert any("No decisions on this LoRA yet" in c.value for c in at.caption)
    # a link to another LoRA (st.page_link from the map or a table) wins over the kept choice
    at.switch_page("pages/review.py").run()
    at.query_params.clear()
    at.query_params["lora"] = "civitai:503382"
    at.switch_page("pages/detail.py").run()
    assert [t.value for t in at.title] == ["AziibPixelMix XL LORA"]


def test_filtered_neighbours_are_counted_and_can_be_shown(real_store_path: Path, monkeypatch) -> None:
    at = open_detail(real_store_path, monkeypatch, lora=PIXEL, smax="5")
    toggle = at.toggle(key="detail_show_excl")
    assert "removed by the current thresholds" in toggle.label
    n_hidden = int(toggle.label.split()[2])
    assert n_hidden > 0 and all(s <= 5 for s in table_with(at, "rank")["strength"])
    toggle.set_value(True).run()
    nb = table_with(at, "rank")
    assert len(nb) == 20 and (nb["excluded_because"].str.contains("too strong")).sum() == 10


def test_no_or_unknown_lora_is_explained(real_store_path: Path, monkeypatch) -> None:
    at = open_detail(real_store_path, monkeypatch)
    assert not at.exception and any("Choose a LoRA" in i.value for i in at.info)
    at = open_detail(real_store_path, monkeypatch, lora="424242424")
    assert not at.exception and any("Ignored the link's `lora=424242424`" in c.value for c in at.sidebar.caption)


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_local_characterization_shows_categories_and_blurred_pairs(store_copy: Store, monkeypatch) -> None:
    job = store_copy.jobs.enqueue(PIXEL, "/tmp/x.safetensors", "tiny", "smoke", 4, {}, "ada")
    rng = np.random.default_rng(0)
    pairs = [
        {"pair_index": i, "prompt": f"a <b>{i}</b>", "category": c, "seed": i, "diff": rng.normal(size=8) * (i + 1)}
        for i, c in enumerate(["Food", "Food", "Logos", "Animals"])
    ]
    store_copy.jobs.add_pair_results(job, pairs)
    store_copy.jobs.put_thumbnails(job, [(0, _png((255, 0, 0)), _png((0, 0, 255))), (2, _png((0, 0, 0)), None)])
    got = store_copy.jobs.pair_results_of(PIXEL)
    expected = [np.linalg.norm(p["diff"].astype(np.float32)) for p in pairs]
    np.testing.assert_allclose(got["norm"], expected, rtol=1e-5)
    assert store_copy.jobs.pair_results_of("civitai:160844").empty
    thumbs = store_copy.jobs.thumbnails_of(PIXEL)
    assert list(thumbs["pair_index"]) == [0, 2] and list(thumbs["category"]) == ["Food", "Logos"]

    at = open_detail(store_copy.path, monkeypatch, lora=PIXEL)
    assert not at.exception
    bar = next(c for c in at.get("plotly_chart") if c.key == "cat_bar" or "Food" in c.proto.spec)
    assert "Logos" in bar.proto.spec and "Animals" in bar.proto.spec
    page = at.get("html")[0].proto.body
    assert page.count("blur(14px)") == 3 and "no LoRA image" in page and "&lt;b&gt;2&lt;/b&gt;" in page
    at.toggle(key="detail_reveal").set_value(True).run()
    assert "blur(" not in at.get("html")[0].proto.body


def test_claim_then_decide_and_read_only_without_login(store_copy: Store, monkeypatch) -> None:
    at = open_detail(store_copy.path, monkeypatch, lora=PIXEL)
    at.button(key="detail_claim").click().run()
    assert store_copy.review.claim_holder(PIXEL) == "ada"
    at.radio(key="detail_action").set_value("escalate")
    at.text_area(key="detail_note").input("looks like a known artist's style")
    at.form_submit_button[0].click().run()
    assert not at.exception
    assert any("Recorded: escalate by ada" in s.value for s in at.success)
    assert {m.label: m.value for m in at.metric}["Review status"] == "escalated"
    hist = table_with(at, "status_before")
    assert list(zip(hist["reviewer"], hist["status_before"], hist["status_after"])) == [("ada", "unreviewed", "escalated")]
    assert store_copy.review.claim_holder(PIXEL) is None

    # OIDC configured, nobody logged in: read-only with the reason
    ro = AppTest.from_file(APP, default_timeout=60)
    ro.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "s"}
    ro.secrets["carlos"] = {"reviewers": ["ada@example.org"]}
    ro.user = {"is_logged_in": False}
    ro = open_detail(store_copy.path, monkeypatch, at=ro, lora=PIXEL)
    assert not ro.exception and ro.button(key="detail_claim").disabled
    assert any("log in" in i.value for i in ro.info)
    assert any(b.label == "Log in" for b in ro.sidebar.button)
