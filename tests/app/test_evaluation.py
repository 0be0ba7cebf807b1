"""AppTest of the evaluation page on the real corpus (BM25 and behaviour search, a query subset)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from carlos.config import REPO_ROOT

APP = str(REPO_ROOT / "streamlit_app.py")


def test_evaluation_plots_diversity_and_explains_missing_judge(real_store_path: Path, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CARLOS_DB", str(real_store_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    at = AppTest.from_file(APP, default_timeout=300).run().switch_page("pages/evaluation.py").run()
    assert not at.exception
    at.multiselect[0].set_value(["bm25", "behaviour"])
    at.slider[-1].set_value(2).run()
    next(b for b in at.button if b.label == "Run evaluation").click().run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1
    table = at.dataframe[0].value
    assert list(table.columns) == [1, 3, 5, 10, 20] and len(table) == 2
    assert ((table > 0) & (table <= 1)).all().all()  # normalized entropy
    assert any("not computed" in i.value for i in at.info)
