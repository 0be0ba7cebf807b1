"""Creator text in the figures: a hostile LoRA name reaches Plotly's hover and labels with
``&``, ``<`` and ``>`` as entities (Plotly interprets ``<a>``, ``<b>``, ``<br>``), quotes kept."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from carlos.config import Thresholds
from carlos.core.risk import RiskPolicy, annotate
from carlos.viz import figures as plots

HOSTILE = '<a href="javascript:alert(1)">click</a> <b>bold</b><br><img src=x> &amp; =HYPERLINK("http://evil","x")'


def _frame() -> pd.DataFrame:
    n = 12
    df = pd.DataFrame(
        {
            "lora_id": [f"t:{i}" for i in range(n)],
            "name": [HOSTILE] + [f"plain {i}" for i in range(1, n)],
            "model_id": np.arange(n),
            "source": "test",
            "strength": np.linspace(1, 11, n),
            "consistency": np.linspace(0.01, 0.5, n),
            "x": np.arange(n, dtype=float),
            "y": np.arange(n, dtype=float),
        }
    )
    return annotate(df, RiskPolicy(thresholds=Thresholds(9.0, 0.1)))


def _hostile_strings(fig) -> list[str]:
    """Every per-point string of every trace that came from the hostile name."""
    out = []
    for trace in fig.data:
        for cd in trace.customdata if trace.customdata is not None else []:
            if cd[0] == "t:0":
                out.append(cd[1])
        texts = trace.text if isinstance(trace.text, (tuple, list, np.ndarray)) else []
        out += [t for t in texts if isinstance(t, str) and t.startswith("&lt;a")]
    return out


def test_hover_and_labels_show_the_name_as_text() -> None:
    frame = _frame()
    figs = [plots.risk_scatter(frame, Thresholds(9.0, 0.1)), plots.map_scatter(frame, highlight_ids=["t:0"])]
    for fig in figs:
        shown = _hostile_strings(fig)
        assert shown, "the hostile point has no hover text"
        for s in shown:
            assert "<" not in s and ">" not in s  # no tag Plotly could interpret
            assert HOSTILE.startswith(html.unescape(s)) and '"' in s  # the characters, quotes as they are
    highlighted = [t for t in _hostile_strings(figs[1]) if len(html.unescape(t)) < len(HOSTILE)]
    assert highlighted and html.unescape(highlighted[0]) == HOSTILE[:24]  # the map's label: the first 24 characters
