"""The adaptive protocol's stopping rule and schedule (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from carlos.config import Thresholds
from carlos.core.adaptive import AdaptiveSettings, decide, schedule, settled_class
from carlos.core.uncertainty import PromptSums
from carlos.errors import InvalidInputError


def _sums(n_prompts: int, per: int, mean: float, noise: float, d: int = 64, seed: int = 0) -> PromptSums:
    rng = np.random.default_rng(seed)
    mu = np.zeros(d)
    mu[0] = mean
    diffs = mu + noise * rng.standard_normal((n_prompts * per, d))
    return PromptSums.from_diffs(diffs, [i // per for i in range(n_prompts * per)])


def test_schedule_is_stratified_and_complete() -> None:
    rounds = schedule([k // 8 for k in range(280)])
    flat = [x for r in rounds for x in r]
    assert len(flat) == len(set(flat)) == 4480 and len(rounds[0]) == 35
    assert [j for _, j in flat] == sorted(j for _, j in flat)  # images in the authors' order
    assert sorted({p // 8 for p, _ in rounds[0]}) == list(range(35))
    assert [sum(map(len, rounds[:i])) for i in (1, 2, 11, 12)] == [35, 70, 385, 455]  # ≥ 10 % growth


def test_settled_classes() -> None:
    t = Thresholds()
    assert settled_class((9.9, 10.5), (0.0, 0.5), t) == "too strong"
    assert settled_class((5.0, 6.0), (0.01, 0.03), t) == "too unstable"
    assert settled_class((5.0, 6.0), (0.05, 0.2), t) == "retained"
    assert settled_class((9.0, 10.0), (0.05, 0.2), t) is None
    assert settled_class((5.0, 6.0), (0.03, 0.05), t) is None
    assert settled_class((50.0, 60.0), (0.0, 0.01), Thresholds(None, None)) == "retained"


def test_minimum_maximum_and_reasons() -> None:
    strong = _sums(35, 2, mean=3.0, noise=0.05)  # consistent: direction and intervals settle at once
    assert not decide(strong, AdaptiveSettings(min_pairs=140)).stop
    d = decide(strong)
    assert d.stop and d.reason == "direction and intervals settled" and d.risk_class == "retained" and d.expected_cosine > 0.99
    assert d.message() == "stopped after 70 of 4,480 pairs: direction and intervals settled"
    noise = _sums(70, 1, mean=0.0, noise=1.0)  # no direction: Consistency ~ 0, settled below 0.041
    assert decide(noise).reason == "risk class settled: too unstable"
    big = _sums(70, 1, mean=0.0, noise=20.0 / 8)  # Strength ~ 20 > 9.8
    assert decide(big).reason == "risk class settled: too strong"
    weak = _sums(70, 1, mean=1.0, noise=0.35)  # Consistency ~ 0.11, cosine ~ 0.95 at 70 pairs
    d = decide(weak, AdaptiveSettings(max_pairs=70))
    assert d.stop and d.reason == "reached the maximum of 70 pairs"
    assert not decide(weak).stop and "direction" in decide(weak).waiting_for


def test_invalid_settings() -> None:
    with pytest.raises(InvalidInputError):
        AdaptiveSettings(min_pairs=5000)
    with pytest.raises(InvalidInputError):
        AdaptiveSettings(confidence=1.0)
