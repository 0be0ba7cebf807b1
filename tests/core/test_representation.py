"""The representation math against naive definitions (PAPER.md)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from carlos.core.index import DirectionIndex
from carlos.core.representation import (
    RunningSummary,
    consistency,
    consistency_naive,
    direction,
    strength,
    summarize,
)
from carlos.errors import InvalidInputError


def _naive_strength(d: np.ndarray) -> float:
    return float(np.mean([np.sqrt(sum(x * x for x in row)) for row in d]))


@pytest.mark.parametrize("n,d,bias", [(2, 3, 0.0), (7, 16, 0.5), (60, 512, 0.2), (200, 32, 2.0)])
def test_matches_naive_definitions(n: int, d: int, bias: float) -> None:
    rng = np.random.default_rng(n * 1000 + d)
    diffs = rng.normal(size=(n, d)) + bias
    rep = summarize(diffs)
    assert rep.n == n and rep.dim == d
    assert abs(rep.consistency - consistency_naive(diffs)) < 1e-6
    assert abs(consistency(diffs) - consistency_naive(diffs)) < 1e-6
    assert abs(rep.strength - _naive_strength(diffs)) < 1e-6
    np.testing.assert_allclose(rep.direction, diffs.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(direction(diffs), diffs.mean(axis=0), atol=1e-6)
    assert abs(strength(diffs) - rep.strength) < 1e-12


def test_identical_diffs_are_perfectly_consistent() -> None:
    diffs = np.tile(np.arange(1, 9, dtype=float), (5, 1))
    assert consistency(diffs) == pytest.approx(1.0)
    assert consistency(np.vstack([diffs, -diffs[:1]])) < 1.0


def test_opposite_pair_is_minus_one() -> None:
    assert consistency([[1.0, 2.0], [-1.0, -2.0]]) == pytest.approx(-1.0)


def test_zero_vectors_follow_documented_convention() -> None:
    rng = np.random.default_rng(0)
    diffs = rng.normal(size=(10, 8))
    diffs[[2, 5]] = 0.0
    assert consistency(diffs) == pytest.approx(consistency_naive(diffs), abs=1e-12)
    zero = summarize(np.zeros((4, 8)))
    assert zero.strength == 0.0 and zero.consistency == 0.0
    assert not zero.direction.any()


@pytest.mark.parametrize(
    "bad,match",
    [
        ([[1.0, 2.0]], "at least 2"),
        (np.zeros((0, 4)), "at least 2"),
        ([[1.0, np.nan], [1.0, 2.0]], "NaN or inf"),
        ([[1.0, np.inf], [1.0, 2.0]], "NaN or inf"),
        ([[1.0, 2.0], [1.0]], "rectangular"),
        (np.ones(5), "2-D"),
        (np.ones((3, 0)), "dimension 0"),
        ([["a", "b"], ["c", "d"]], "rectangular"),
    ],
)
def test_degenerate_inputs_raise_clearly(bad: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        summarize(bad)


def test_single_diff_has_direction_and_strength_but_no_consistency() -> None:
    np.testing.assert_allclose(direction([[3.0, 4.0]]), [3.0, 4.0])
    assert strength([[3.0, 4.0]]) == pytest.approx(5.0)
    with pytest.raises(InvalidInputError):
        consistency([[3.0, 4.0]])


def test_running_summary_is_chunking_and_order_invariant() -> None:
    rng = np.random.default_rng(1)
    diffs = rng.normal(size=(100, 24)) + 0.3
    whole = summarize(diffs)
    a = RunningSummary(dim=24)
    for chunk in np.array_split(diffs, 7):
        a.add(chunk)
    b = RunningSummary.from_diffs(diffs[60:]).merge(RunningSummary.from_diffs(diffs[:60]))
    for part in (a.result(), b.result()):
        assert part.n == 100
        assert part.consistency == pytest.approx(whole.consistency, abs=1e-12)
        assert part.strength == pytest.approx(whole.strength, abs=1e-12)
        np.testing.assert_allclose(part.direction, whole.direction, atol=1e-6)
    with pytest.raises(InvalidInputError, match="dimension"):
        a.add(np.ones((2, 5)))


def test_cosines_to_a_direction() -> None:
    """Cosine of every stored direction with a query (the index's float32 scan); zero rows score 0."""
    m = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [-3.0, 0.0]], dtype=np.float32)
    index = DirectionIndex(m, np.zeros(4), np.zeros(4))
    np.testing.assert_allclose(index.cosines(np.array([2.0, 0.0])), [1.0, 0.0, 0.0, -1.0], atol=1e-7)
    with pytest.raises(InvalidInputError, match="zero vector"):
        index.cosines(np.zeros(2))
    with pytest.raises(InvalidInputError, match="shape"):
        index.cosines(np.ones(3))


def test_core_does_not_import_torch() -> None:
    code = "import sys, carlos.core.representation; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
