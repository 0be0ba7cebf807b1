"""Near-duplicates without an n × n matrix: on the real corpus, the same neighbours and groups
as the brute-force method at every level of the page's slider; union–find groups; the work
budget and the per-view cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from carlos.core.view import CorpusView
from carlos.errors import InvalidInputError
from carlos.review import duplicates
from carlos.store.catalog import load_view
from carlos.store.store import Store

#: Every level the review page's slider offers (0.50 to 1.00 in steps of 0.01).
LEVELS = [round(0.5 + 0.01 * i, 2) for i in range(51)]


def _unit64(view: CorpusView) -> np.ndarray:
    m = view.matrix.astype(np.float64)
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return np.divide(m, n, out=np.zeros_like(m), where=n > 1e-12)


def old_scores(view: CorpusView, rows: np.ndarray) -> np.ndarray:
    """The queue's scores as review_queue computed them before: the float32 normalized
    matrix, the queue times all of it (then every row at or over the level, but itself)."""
    m = view.matrix / np.maximum(np.linalg.norm(view.matrix, axis=1, keepdims=True), 1e-12)
    return m[rows] @ m.T


def old_method(sims: np.ndarray, rows: np.ndarray, level: float) -> list[list[int]]:
    return [[int(h) for h in np.flatnonzero(sims[k] >= level) if h != r] for k, r in enumerate(rows)]


@pytest.fixture(scope="module")
def view(real_store: Store) -> CorpusView:
    return load_view(real_store)


def test_same_neighbours_as_brute_force_at_every_level_of_the_slider(view: CorpusView) -> None:
    rows = np.arange(len(view))  # the whole corpus as the queue (the page's "show all")
    cos = _unit64(view) @ _unit64(view).T  # the brute-force method, exact
    np.fill_diagonal(cos, -np.inf)
    off = cos[np.triu_indices(len(view), 1)]
    sims, literal = old_scores(view, rows), 0
    for level in LEVELS:
        got = duplicates.near_duplicate_rows(view, rows, level)
        want = [np.flatnonzero(c >= level - duplicates.COS_TOL) for c in cos]
        assert all(np.array_equal(g, w) for g, w in zip(got, want)), level
        # and exactly what the old float32 code listed, wherever no pair sits within
        # float32 rounding of the level (the old code could go either way there)
        if np.abs(off - level).min() > 1e-5:
            assert [g.tolist() for g in got] == old_method(sims, rows, level), level
            literal += 1
    assert literal >= 35 and 0.95 in [lv for lv in LEVELS if np.abs(off - lv).min() > 1e-5]
    # the corpus has near-duplicates to find: pairs of identical directions, and more above 0.9
    ones = duplicates.near_duplicate_rows(view, rows, 1.0)
    assert sum(len(x) for x in ones) == 2 * int((off >= 1.0 - duplicates.COS_TOL).sum()) > 0
    assert sum(len(x) for x in duplicates.near_duplicate_rows(view, rows, 0.9)) > sum(len(x) for x in ones)


@pytest.mark.parametrize("level", [0.5, 0.8, 0.95])
def test_the_bound_and_the_full_scan_agree(view: CorpusView, monkeypatch: pytest.MonkeyPatch, level: float) -> None:
    rows = np.arange(len(view))
    answers = []
    for share in (0.0, 1.0):  # 0: every block scored in full; 1: every block through the bound
        duplicates.forget()
        monkeypatch.setattr(duplicates, "FULL_SHARE", share)
        answers.append([x.tolist() for x in duplicates.near_duplicate_rows(view, rows, level)])
    assert answers[0] == answers[1] and sum(map(len, answers[0])) > 0
    duplicates.forget()


def test_groups_are_the_connected_components_of_the_links(view: CorpusView) -> None:
    rows = np.arange(len(view))
    for level in (0.6, 0.85, 0.95):
        near = duplicates.near_duplicate_rows(view, rows, level)
        labels = duplicates.group_labels(rows.tolist(), near)
        src = np.concatenate([np.full(len(x), i) for i, x in enumerate(near)])
        dst = np.concatenate(near)
        graph = coo_matrix((np.ones(len(src)), (src, dst)), shape=(len(view), len(view)))
        n_comp, comp = connected_components(graph, directed=False)
        assert labels.max() == n_comp
        # same partition: a one-to-one map between the two labellings
        assert len(set(zip(labels.tolist(), comp.tolist()))) == n_comp
        assert labels[0] == 1 and set(np.unique(labels)) == set(range(1, n_comp + 1))


def test_group_labels_link_items_through_lora_outside_the_queue() -> None:
    # items 10 and 30 share neighbour 20 (not in the queue); 40 is alone; 50 has the same file as 10
    labels = duplicates.group_labels([10, 30, 40, 50], [[20], [20, 31], [], [10]])
    assert labels.tolist() == [1, 1, 2, 1]


def _view(matrix: np.ndarray, sha: list[str | None] | None = None) -> CorpusView:
    n = len(matrix)
    frame = pd.DataFrame(
        {"lora_id": [f"l{i}" for i in range(n)], "strength": 1.0, "consistency": 0.1, "sha256": sha or [None] * n, "source": "t"}
    )
    return CorpusView("test", frame, np.ascontiguousarray(matrix, dtype=np.float32), 1)


def test_queue_columns_groups_order_and_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, 16))
    m = np.vstack([base, base[0] * 3.0, base[1] + 1e-3, np.zeros(16)])  # l6 = l0 scaled, l7 ≈ l1, l8 zero
    view = _view(m, sha=[None, "aa", None, None, "aa", None, None, None, None])
    frame = view.frame.copy()
    frame["decided_at"] = pd.to_datetime("2026-01-01") + pd.to_timedelta(np.arange(len(m)), "h")
    queue = frame[frame["lora_id"].isin(["l0", "l1", "l3", "l6", "l8"])]
    out = duplicates.with_duplicates(view, frame, queue, 0.99)
    # newest first, a group kept together in the place of its newest item
    assert list(out["lora_id"]) == ["l8", "l6", "l0", "l3", "l1"]
    by = out.set_index("lora_id")
    assert by.loc["l0", "near_duplicates"] == ["l6"] and by.loc["l1", "near_duplicates"] == ["l7"]
    assert by.loc["l1", "same_file"] == ["l4"] and by.loc["l8", "near_duplicates"] == []  # a zero direction is like nothing
    assert by.loc["l0", "group"] == by.loc["l6", "group"] and by.loc["l0", "group_size"] == 2
    assert by.loc["l3", "group_size"] == 1 and out.attrs["near_duplicates_skipped"] == 0
    # over the budget: the most recent items are looked up, the rest say they were not
    monkeypatch.setattr(duplicates, "MAX_PAIRS", 2 * len(view))
    cut = duplicates.with_duplicates(view, frame, queue, 0.99)
    assert cut["near_duplicates"].isna().tolist() == [False, False, True, True, True]
    assert cut.attrs["near_duplicates_skipped"] == 3
    assert duplicates.with_duplicates(view, frame, queue.iloc[:0], 0.99).empty
    with pytest.raises(InvalidInputError, match="level"):
        duplicates.near_duplicate_rows(view, [0], 0.0)


def test_degenerate_corpora_stay_exact() -> None:
    """Hundreds of copies of one direction, zero directions and a few others, at CLIP's width:
    the basis of stage 1 is built from a rank-deficient sample and must still bound every cosine."""
    rng = np.random.default_rng(2)
    one = rng.standard_normal(512)
    m = np.vstack([np.tile(one, (300, 1)) * rng.uniform(0.5, 2.0, (300, 1)), np.zeros((5, 512)), rng.standard_normal((20, 512))])
    view = _view(m)
    unit = _unit64(view)
    cos = unit @ unit.T
    np.fill_diagonal(cos, -np.inf)
    rows = np.array([0, 150, 302, 310, 320])
    for level in (0.5, 0.99, 1.0):
        got = duplicates.near_duplicate_rows(view, rows, level)
        assert [g.tolist() for g in got] == [np.flatnonzero(cos[r] >= level - duplicates.COS_TOL).tolist() for r in rows]
    assert len(got[0]) == 299 and got[2].size == 0  # the copies find each other; a zero direction finds nothing


def test_answers_are_kept_per_view_and_level(monkeypatch: pytest.MonkeyPatch) -> None:
    view = _view(np.random.default_rng(1).standard_normal((50, 8)))
    scanned: list[int] = []
    real_scan = duplicates._scan

    def counting(prep, rows, level):
        scanned.extend(rows.tolist())
        return real_scan(prep, rows, level)

    monkeypatch.setattr(duplicates, "_scan", counting)
    first = duplicates.near_duplicate_rows(view, [3, 4], 0.5)
    again = duplicates.near_duplicate_rows(view, [4, 3, 5], 0.5)  # only row 5 is new
    assert scanned == [3, 4, 5]
    assert [a.tolist() for a in again[:2]] == [first[1].tolist(), first[0].tolist()]
    duplicates.near_duplicate_rows(view, [3], 0.6)  # another level: scanned again
    assert scanned == [3, 4, 5, 3]
