"""AppTest of the review page's near-duplicate groups: a group column, and a queue over the
work budget says which items were not looked up instead of scoring them all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from carlos.config import REPO_ROOT
from carlos.review import duplicates

APP = str(REPO_ROOT / "streamlit_app.py")


def test_show_all_over_the_budget_looks_up_the_most_recent_and_says_so(real_store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARLOS_DB", str(real_store_path))
    monkeypatch.setenv("CARLOS_REVIEWER", "ada")
    monkeypatch.setattr(duplicates, "MAX_PAIRS", 740 * 25)  # 25 items' worth of cosines per render
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.query_params["cos"] = "0.6"
    at.switch_page("pages/review.py").run()
    at.toggle(key="rq_show_all").set_value(True).run()
    assert not at.exception and not at.error
    table = next(t.value for t in at.dataframe if "near_duplicates" in t.value.columns)
    assert len(table) == 740 and "group" in table.columns
    assert (table["near_duplicates"] == "not looked up").sum() == 740 - 25
    assert any("looked up for the 25 most recent items only" in c.value and "other 715" in c.value for c in at.caption)
    # linked items share a group number, and a group's members are listed together
    looked = table[table["near_duplicates"] != "not looked up"]
    linked = looked[looked["near_duplicates"] != ""]
    assert len(linked) > 0
    groups = table["group"].to_numpy()
    for g in linked["group"]:
        rows = np.flatnonzero(groups == g)
        assert len(rows) >= 2 and list(rows) == list(range(rows[0], rows[0] + len(rows)))
