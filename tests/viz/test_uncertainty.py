"""The error-bar figure of a LoRA's characterizations and the risk scatter's interval bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carlos.config import Thresholds
from carlos.errors import InvalidInputError
from carlos.viz.figures import risk_scatter
from carlos.viz.uncertainty import interval_figure


def test_interval_figure_has_one_bar_per_run_and_the_thresholds() -> None:
    rows = pd.DataFrame(
        {
            "label": ["quick · tiny (#2)", "paper · sdxl (#1)"],
            "strength": [4.1, 4.3],
            "strength_lo": [3.5, 4.1],
            "strength_hi": [4.7, 4.5],
            "consistency": [0.05, 0.06],
            "consistency_lo": [0.02, 0.05],
            "consistency_hi": [0.09, 0.07],
        }
    )
    fig = interval_figure(rows, Thresholds())
    s, c = fig.data
    assert list(s.error_x.array) == pytest.approx([0.6, 0.2]) and list(s.error_x.arrayminus) == pytest.approx([0.6, 0.2])
    assert list(c.error_x.array) == pytest.approx([0.04, 0.01])
    assert {shape.x0 for shape in fig.layout.shapes} == {9.8, 0.041}
    assert len(interval_figure(rows, Thresholds(strength_max=None, consistency_min=None)).layout.shapes) == 0
    with pytest.raises(InvalidInputError):
        interval_figure(rows.drop(columns="strength_lo"), Thresholds())


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 20
    df = pd.DataFrame(
        {
            "lora_id": [f"t:{i}" for i in range(n)],
            "name": [f"<i>lora {i}</i>" for i in range(n)],
            "strength": rng.uniform(1, 11, n),
            "consistency": rng.uniform(0, 0.5, n),
            "risk_class": "low risk",
        }
    )
    for col in ("strength_lo", "strength_hi", "consistency_lo", "consistency_hi", "risk_confidence"):
        df[col] = np.nan
    df.loc[3, ["strength_lo", "strength_hi", "consistency_lo", "consistency_hi"]] = [
        df.loc[3, "strength"] - 1,
        df.loc[3, "strength"] + 2,
        df.loc[3, "consistency"] - 0.01,
        df.loc[3, "consistency"] + 0.02,
    ]
    df["risk_confidence"] = df["risk_confidence"].astype(object)
    df.loc[3, "risk_confidence"] = "uncertain: too strong or low risk"
    return df


def test_risk_scatter_draws_error_bars_only_for_rows_with_intervals() -> None:
    fig = risk_scatter(_frame(), Thresholds())
    bars = [t for t in fig.data if t.name.startswith("95% intervals")]
    assert len(bars) == 1 and [c[0] for c in bars[0].customdata] == ["t:3"]
    assert list(bars[0].error_x.array) == pytest.approx([2.0]) and list(bars[0].error_x.arrayminus) == pytest.approx([1.0])
    assert list(bars[0].error_y.array) == pytest.approx([0.02])
    assert "uncertain: too strong or low risk" in bars[0].text[0]
    assert not [t for t in risk_scatter(_frame(), Thresholds(), axes="ranks").data if t.name.startswith("95%")]  # values axes only
    plain = _frame().drop(columns=["strength_lo", "strength_hi", "consistency_lo", "consistency_hi", "risk_confidence"])
    assert not [t for t in risk_scatter(plain, Thresholds()).data if t.name.startswith("95%")]
