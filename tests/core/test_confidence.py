"""Risk class with confidence: probabilities from the intervals and the thresholds in force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carlos.config import Thresholds
from carlos.core.confidence import NO_INTERVAL, risk_call, risk_calls, threshold_probabilities
from carlos.core.risk import RISK_CLASSES, RiskPolicy, annotate
from carlos.core.uncertainty import Uncertainty, estimate


def _run(amp: float, scale: float, *, prompts: int = 35, seeds: int = 2, seed: int = 0) -> Uncertainty:
    """A quick-sized characterization: LoRA effect ``amp`` along one direction, norms ~``scale``."""
    rng = np.random.default_rng(seed)
    d = 32
    effect = rng.normal(0, 1 / np.sqrt(d), size=(prompts, 1, d)) + rng.normal(0, 1 / np.sqrt(d), size=(prompts, seeds, d))
    diffs = (scale * (amp * np.ones(d) / np.sqrt(d) + effect)).reshape(-1, d)
    return estimate(diffs, [f"p{i // seeds}" for i in range(prompts * seeds)])


def test_far_from_every_threshold_is_settled() -> None:
    u = _run(1.4, 3.0)  # Consistency ~0.5, Strength ~6: retained, no review region given
    call = risk_call(u, Thresholds())
    assert call.settled and call.risk_class == "low risk" and call.label == "low risk (>99%)"
    assert sum(call.probabilities.values()) == pytest.approx(1.0)
    assert set(call.probabilities) == set(RISK_CLASSES)


def test_review_region_and_its_probability() -> None:
    u = _run(1.4, 3.0)
    cuts = (u.strength - 6 * u.strength_se, u.consistency_estimate - 6 * u.consistency_se)
    call = risk_call(u, Thresholds(), cuts)
    assert call.settled and call.risk_class == "review" and call.label.startswith("review (")
    near = (u.strength - 0.5 * u.strength_se, 0.0)  # the Strength cut inside the interval
    unsure = risk_call(u, Thresholds(), near)
    assert not unsure.settled and unsure.label in ("uncertain: review or low risk", "uncertain: low risk or review")
    assert 0.5 < unsure.probabilities["review"] < 0.95


def test_a_threshold_inside_the_interval_is_not_settled() -> None:
    u = _run(0.205, 3.0)  # Consistency ~0.02: close to the paper's 0.041
    lo, hi = u.consistency_interval
    t = Thresholds(consistency_min=(lo + hi) / 2)
    call = risk_call(u, t)
    assert not call.settled and call.risk_class is None
    assert call.label == "uncertain: too unstable or low risk" or call.label == "uncertain: low risk or too unstable"
    p = threshold_probabilities(u, t)["under_consistency"]
    assert 0.2 < p < 0.8


def test_threshold_outside_the_interval_is_at_least_97_5_percent() -> None:
    u = _run(0.475, 3.0)
    lo, hi = u.strength_interval
    assert threshold_probabilities(u, Thresholds(strength_max=lo))["over_strength"] >= 0.975 - 1e-9
    assert threshold_probabilities(u, Thresholds(strength_max=hi))["over_strength"] <= 0.025 + 1e-9
    c_lo, c_hi = u.consistency_interval
    assert threshold_probabilities(u, Thresholds(consistency_min=c_hi))["under_consistency"] == pytest.approx(0.975, abs=1e-6)
    call = risk_call(u, Thresholds(strength_max=lo - u.strength_se))
    assert call.risk_class == "too strong" and call.label.startswith("too strong (")


def test_corpus_rows_and_degenerate_runs_get_no_invented_interval() -> None:
    assert risk_call(None, Thresholds()).label == NO_INTERVAL == "no per-pair data: no interval"
    one_prompt = estimate(np.ones((4, 3)), ["a"] * 4)
    call = risk_call(one_prompt.to_dict(), Thresholds())
    assert call.label.startswith("no interval: one prompt") and call.probabilities == {}
    zero = estimate(np.zeros((6, 3)), list("aabbcc"))  # no effect at all: Consistency 0 is certain
    assert risk_call(zero, Thresholds()).label == "too unstable (>99%)"
    u = _run(1.4, 3.0)
    assert risk_calls(["x", "corpus"], {"x": u.to_dict()}, Thresholds()) == ["low risk (>99%)", NO_INTERVAL]


def test_settled_calls_agree_with_annotate_on_the_point_estimates() -> None:
    runs = {f"l{i}": _run(amp, scale, seed=i) for i, (amp, scale) in enumerate([(1.4, 3.0), (0.1, 3.0), (1.4, 9.0), (0.93, 2.0)])}
    frame = pd.DataFrame(
        {
            "lora_id": list(runs),
            "name": list(runs),
            "strength": [u.strength for u in runs.values()],
            "consistency": [u.consistency_estimate for u in runs.values()],
            "model_id": 1,
        }
    )
    df = annotate(frame, RiskPolicy(thresholds=Thresholds()))
    cuts = (df.attrs["review_strength_min"], df.attrs["review_consistency_min"])
    for row in df.itertuples():
        call = risk_call(runs[row.lora_id], Thresholds(), cuts)
        if call.settled:
            assert call.risk_class == row.risk_class
        else:
            assert row.risk_class in call.label
