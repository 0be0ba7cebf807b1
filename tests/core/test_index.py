"""The exact top-k index behind every direction search, against plain full scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carlos.config import Thresholds
from carlos.core.index import INT8_MIN_ROWS, DirectionIndex
from carlos.core.ranking import rank, rank_direction, similar
from carlos.core.view import CorpusView
from carlos.errors import InvalidInputError
from carlos.models.int8 import FbgemmInt8, fbgemm_available


def _view(n: int, d: int = 64, seed: int = 0) -> CorpusView:
    rng = np.random.default_rng(seed)
    m = (rng.standard_normal(d) + 0.8 * rng.standard_normal((n, d))).astype(np.float32)
    m[3] = 0.0  # a zero direction
    m[10:20] = m[9]  # exact ties: corpus order must settle them
    frame = pd.DataFrame(
        {
            "lora_id": [f"l{i}" for i in range(n)],
            "name": [f"LoRA {i}" for i in range(n)],
            "version_id": np.arange(n),
            "model_id": np.where(np.arange(n) % 7 == 0, None, "m"),
            "source": "test",
            "strength": rng.uniform(1, 11, n),
            "consistency": rng.uniform(0, 0.5, n),
        }
    )
    return CorpusView(embedder="test", frame=frame, matrix=m, data_version=1, int8=FbgemmInt8())


@pytest.mark.parametrize("n", [500, INT8_MIN_ROWS + 5000])
def test_rank_direction_equals_scoring_every_lora(n: int) -> None:
    view = _view(n)
    assert view.index.kernel == ("int8-fbgemm+exact-rerank" if n >= INT8_MIN_ROWS and fbgemm_available() else "float32-scan")
    t = Thresholds(strength_max=9.8, consistency_min=0.041)
    rng = np.random.default_rng(1)
    for q in [view.matrix[9], *rng.standard_normal((4, view.matrix.shape[1]))]:
        skip = frozenset({"l0", "l9", "not-in-view"})
        fast = rank_direction(view, q, retriever="r", query="q", thresholds=t, top_k=12, skip=skip)
        full = rank(view, view.index.cosines(q), retriever="r", query="q", thresholds=t, top_k=12, skip=skip)
        for a, b in ((fast.hits, full.hits), (fast.excluded, full.excluded)):
            assert [h.lora_id for h in a] == [h.lora_id for h in b]
            assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-6)
            assert [h.flags for h in a] == [h.flags for h in b]
        assert (fast.n_candidates, fast.n_excluded) == (full.n_candidates, full.n_excluded)
        assert fast.n_candidates == n - 2  # l0 and l9 skipped; an unknown id is ignored
        assert all(h.strength <= 9.8 and h.consistency >= 0.041 for h in fast.hits)
        assert all(h.excluded_because for h in fast.excluded)
    # ties keep corpus order; the LoRA itself is skipped in 'similar'
    res = similar(view, "l9", thresholds=Thresholds(None, None), top_k=5)
    assert [h.lora_id for h in res.hits] == ["l10", "l11", "l12", "l13", "l14"]
    small = _view(30)
    top = rank_direction(small, small.matrix[0], retriever="r", query="", thresholds=Thresholds(None, None), top_k=1).hits[0]
    assert top.lora_id == "l0" and "missing creator metadata" in top.flags  # row 0 has no model id


def test_index_rejects_bad_input() -> None:
    m = np.ones((4, 8), np.float32)
    with pytest.raises(InvalidInputError, match="finite"):
        DirectionIndex(np.full((4, 8), np.nan, np.float32), np.ones(4), np.ones(4))
    with pytest.raises(InvalidInputError, match="C-contiguous float32"):
        DirectionIndex(m.astype(np.float64), np.ones(4), np.ones(4))
    index = DirectionIndex(m, np.ones(4), np.ones(4))
    with pytest.raises(InvalidInputError, match="boolean"):
        index.search_masks(np.ones(8), 2, [np.ones(3, bool)])
    with pytest.raises(InvalidInputError, match="positive"):
        index.search_masks(np.ones(8), 0, [np.ones(4, bool)])
    with pytest.raises(InvalidInputError, match="zero vector"):
        index.search(np.zeros(8), 2)
    rows, scores, stats = index.search_masks(np.ones(8), 3, [np.zeros(4, bool)])[0]
    assert rows.size == 0 and stats.eligible == 0
