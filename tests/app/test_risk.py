"""AppTest of the risk page: counts equal `carlos stats`, sliders and links move the
thresholds, a selection is flagged in bulk, thresholds are saved; read-only under auth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from carlos.cli.main import main as cli
from carlos.config import REPO_ROOT, Thresholds
from carlos.core.risk import RiskPolicy, corpus_stats
from carlos.review import workflow as review
from carlos.review.access import CurrentUser
from carlos.store.catalog import load_view
from carlos.store.store import Store

BOB = CurrentUser.local("bob")  # another reviewer, local mode

APP = str(REPO_ROOT / "streamlit_app.py")


def open_risk(db: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("CARLOS_DB", str(db))
    monkeypatch.setenv("CARLOS_REVIEWER", "ada")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.query_params.update(params)
    return at.switch_page("pages/risk.py").run()


def counts(at: AppTest) -> tuple[int, int, int]:
    m = {x.label: int(x.value) for x in at.metric}
    return m["Too strong"], m["Too unstable"], m["Retained"]


def chart_ids(at: AppTest) -> list[str]:
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    return [cd[0] for trace in spec["data"] for cd in trace.get("customdata", [])]


def test_counts_match_the_cli_and_every_lora_is_plotted(real_store_path: Path, monkeypatch, capsys) -> None:
    assert cli(["--db", str(real_store_path), "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    at = open_risk(real_store_path, monkeypatch)
    assert not at.exception and not at.error
    assert counts(at) == (stats["over_strength"], stats["under_consistency"], stats["retained"]) == (21, 204, 515)
    ids = chart_ids(at)
    assert len(ids) == 740 == len(set(ids))
    assert at.query_params["smax"] == "9.8" and at.query_params["cmin"] == "0.041"


def test_sliders_and_links_move_the_thresholds(real_store_path: Path, monkeypatch) -> None:
    frame = load_view(Store.open(real_store_path)).frame
    at = open_risk(real_store_path, monkeypatch)
    at.slider(key="thr_s").set_value(9.0).run()
    at.checkbox(key="thr_c_on").uncheck().run()
    expected = corpus_stats(frame, "x", RiskPolicy(thresholds=Thresholds(9.0, None)))
    assert counts(at) == (expected.over_strength, 0, expected.retained) and expected.over_strength > 21
    assert at.query_params["smax"] == "9" and at.query_params["cmin"] == "off"
    # the thresholds follow the reviewer to another page, and "Reset to saved" restores them
    at.switch_page("pages/overview.py").run()
    at.switch_page("pages/risk.py").run()
    assert counts(at) == (expected.over_strength, 0, expected.retained)
    at.button(key="thr_reset").click().run()
    assert counts(at) == (21, 204, 515)
    # a shared link opens the same view: thresholds and rank axes from the URL
    at = open_risk(real_store_path, monkeypatch, smax="8.5", cmin="0.1", axes="ranks", colour="NSFW level")
    assert not at.exception
    expected = corpus_stats(frame, "x", RiskPolicy(thresholds=Thresholds(8.5, 0.1)))
    assert counts(at) == (expected.over_strength, expected.under_consistency, expected.retained)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "rank" in spec["layout"]["xaxis"]["title"]["text"]
    assert any(t["name"].startswith("PG-13") for t in spec["data"])
    # a bad value in a link is ignored with a note, not a traceback
    at = open_risk(real_store_path, monkeypatch, smax="lots")
    assert not at.exception and counts(at) == (21, 204, 515)
    assert any("Ignored the link" in c.value for c in at.sidebar.caption)


def test_bulk_flag_and_save_thresholds(store_copy: Store, monkeypatch) -> None:
    at = open_risk(store_copy.path, monkeypatch, sel="civitai:130580,civitai:160844")
    assert at.multiselect(key="risk_sel").value == ["civitai:130580", "civitai:160844"]
    review.claim(store_copy, "civitai:160844", BOB)  # someone else holds one of them
    at.text_input(key="risk_flag_note").input("pixel look-alikes")
    at.form_submit_button[0].click().run()
    assert not at.exception
    assert any("Flagged 1 LoRA(s) as ada" in s.value for s in at.success)
    assert any("claimed by bob" in w.value for w in at.warning)
    log = store_copy.review.decisions()
    assert list(zip(log["lora_id"], log["reviewer"], log["note"])) == [("civitai:130580", "ada", "pixel look-alikes")]

    at.slider(key="thr_s").set_value(9.5).run()
    at.text_input(key="risk_thr_note").input("team policy")
    at.form_submit_button[1].click().run()
    assert review.current_thresholds(store_copy) == Thresholds(9.5, 0.041)
    hist = store_copy.review.threshold_history()
    assert list(zip(hist["reviewer"], hist["note"])) == [("ada", "team policy")]
    assert any("Saved: Strength ≤ 9.5" in c.value for c in at.sidebar.caption)


def test_readers_outside_the_reviewer_list_cannot_write(store_copy: Store, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CARLOS_DB", str(store_copy.path))
    # the library reads the reviewer list from the secrets files; AppTest's at.secrets reach st.secrets only
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(
        '[auth]\nredirect_uri = "http://localhost:8501/oauth2callback"\ncookie_secret = "s"\n[carlos]\nreviewers = ["ada@example.org"]\n'
    )
    monkeypatch.setattr("app.access.secrets_files", lambda: (str(secrets),))
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "s"}
    at.secrets["carlos"] = {"reviewers": ["ada@example.org"]}
    at.user = {"is_logged_in": True, "email": "eve@example.org"}
    at.run()
    at.query_params["sel"] = "civitai:130580"
    at.switch_page("pages/risk.py").run()
    assert not at.exception
    assert all(b.disabled for b in at.form_submit_button)
    assert any("not a listed reviewer" in i.value for i in at.info)
    assert any("eve@example.org" in c.value and "read-only" in c.value for c in at.sidebar.caption)
    # a listed reviewer (e-mail matched case-insensitively) may write
    at.user = {"is_logged_in": True, "email": "Ada@Example.org"}
    at.run()
    assert not any(b.disabled for b in at.form_submit_button)


def test_a_search_in_this_session_can_colour_the_scatter(real_store_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CARLOS_DB", str(real_store_path))
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["carlos_search"] = {
        "query": "pixel art",
        "hits": ["civitai:130580"],
        "scores": {"civitai:130580": 0.9, "civitai:503382": 0.7},
    }
    at.run()
    at.query_params["colour"] = "search score"
    at.switch_page("pages/risk.py").run()
    assert not at.exception
    data = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    assert data[0]["marker"]["showscale"] and sorted(cd[0] for cd in data[0]["customdata"]) == ["civitai:130580", "civitai:503382"]
    assert data[1]["name"] == "no search score (738)"
