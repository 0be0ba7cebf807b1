"""Intervals of Strength and Consistency with prompts as clusters: identities against naive
definitions, degenerate input, and coverage on synthetic diff clouds with a known truth."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest

from carlos.core.intervals import ErrorModel, normal_cdf, normal_quantile, t_cdf, t_quantile
from carlos.core.representation import RunningSummary, consistency_naive, summarize
from carlos.core.uncertainty import PromptSums, estimate, from_sums, leave_one_out
from carlos.errors import InvalidInputError

D = 32  # small embedding: the statistics do not depend on d beyond its effective rank
DIRECTION = np.ones(D) / math.sqrt(D)
#: LoRA effect amplitude giving a true (unlimited-prompt) Consistency of about 0.02, 0.1, 0.3, 0.5
#: with the prompt effect and the seed noise below (each N(0, I/d)).
AMPLITUDE = {0.02: 0.205, 0.1: 0.475, 0.3: 0.93, 0.5: 1.4}
#: Trials per setting. The issue asks for 93–97 % coverage over 400 trials; at 400 the binomial SD of
#: a coverage is 1.1 points, so a perfectly calibrated method lands outside the band in one of these
#: 16 checks for about half of all seeds (the first seed tried did, 92.75 % where 12,000 trials
#: measure 95.1 %). 1,200 trials keep the band and make a chance failure rare (SD 0.63 points).
TRIALS = 1200


def _cloud(rng: np.random.Generator, amp: float, prompts: int, seeds: int, trials: int) -> np.ndarray:
    """(trials, prompts, seeds, D) diffs: a LoRA effect, a prompt effect shared by the prompt's
    seeds, and seed noise."""
    prompt_effect = rng.normal(0, 1 / math.sqrt(D), size=(trials, prompts, 1, D))
    noise = rng.normal(0, 1 / math.sqrt(D), size=(trials, prompts, seeds, D))
    return amp * DIRECTION + prompt_effect + noise


@functools.cache
def _truth(amp: float) -> tuple[float, float, np.ndarray]:
    """Population Strength, Consistency (pairs of different prompts) and Direction, from 400,000
    independent prompts (one seed each), seeded once per setting."""
    rng = np.random.default_rng(int(amp * 1e4))
    norm_sum, unit_sum, diff_sum, n = 0.0, np.zeros(D), np.zeros(D), 0
    for _ in range(8):
        x = _cloud(rng, amp, 50_000, 1, 1).reshape(-1, D)
        norms = np.linalg.norm(x, axis=1)
        norm_sum += norms.sum()
        unit_sum += (x / norms[:, None]).sum(axis=0)
        diff_sum += x.sum(axis=0)
        n += len(x)
    return norm_sum / n, float((unit_sum @ unit_sum - n) / (n * (n - 1))), diff_sum / n


def _sums(cloud: np.ndarray) -> list[PromptSums]:
    """Per-trial PromptSums of (trials, prompts, seeds, D), vectorized over trials."""
    norms = np.linalg.norm(cloud, axis=-1)
    units = cloud / norms[..., None]
    t, k, m, _ = cloud.shape
    counts = np.full(k, float(m))
    s_diff, s_unit, s_norm = cloud.sum(axis=2), units.sum(axis=2), norms.sum(axis=2)
    return [PromptSums(counts, counts, s_diff[i], s_unit[i], s_norm[i]) for i in range(t)]


@pytest.mark.parametrize("prompts,seeds", [(35, 2), (140, 4)], ids=["quick-35x2", "larger-140x4"])
@pytest.mark.parametrize("level", list(AMPLITUDE), ids=lambda c: f"cons{c}")
def test_intervals_cover_the_truth_95_percent(level: float, prompts: int, seeds: int) -> None:
    amp = AMPLITUDE[level]
    true_s, true_c, true_dir = _truth(amp)
    assert abs(true_c - level) < 0.01 * max(1.0, level / 0.05)
    rng = np.random.default_rng((2026, int(level * 1000), prompts))
    clouds = [_cloud(rng, amp, prompts, seeds, 400) for _ in range(TRIALS // 400)]
    results = [from_sums(s) for cloud in clouds for s in _sums(cloud)]
    dirs = np.concatenate([cloud.mean(axis=(1, 2)) for cloud in clouds])
    s_cover = np.mean([r.strength_interval[0] <= true_s <= r.strength_interval[1] for r in results])
    c_cover = np.mean([r.consistency_interval[0] <= true_c <= r.consistency_interval[1] for r in results])
    assert 0.93 <= s_cover <= 0.97, f"Strength coverage {s_cover:.3f}"
    assert 0.93 <= c_cover <= 0.97, f"Consistency coverage {c_cover:.3f}"
    # the second-order-corrected variance is unbiased (the plain jackknife is ~35 % high at 0.02 × 35)
    est = np.array([r.consistency_estimate for r in results])
    mean_var = np.mean([r.consistency_se**2 for r in results])
    assert 0.8 < mean_var / est.var() < 1.25
    assert abs(est.mean() - true_c) < 3 * math.sqrt(est.var() / TRIALS)  # unbiased between-prompt estimate
    # expected cosine to the unlimited-prompt Direction against the realized mean cosine
    realized = dirs @ true_dir / (np.linalg.norm(dirs, axis=1) * np.linalg.norm(true_dir))
    predicted = np.mean([r.expected_cosine for r in results])
    assert abs(predicted - realized.mean()) < (0.04 if level < 0.1 else 0.01)


def test_all_pairs_consistency_is_biased_by_within_prompt_pairs() -> None:
    """Why the interval is centred on the between-prompt estimate: with a prompt effect, the
    paper's all-pairs mean is high by about (M−1)/(n−1)·(within − between), i.e. a sizeable
    part of the standard error at low Consistency."""
    amp = AMPLITUDE[0.02]
    _, true_c, _ = _truth(amp)
    results = [from_sums(s) for s in _sums(_cloud(np.random.default_rng(7), amp, 35, 2, TRIALS))]
    bias_all = np.mean([r.consistency for r in results]) - true_c
    bias_between = np.mean([r.consistency_estimate for r in results]) - true_c
    se = np.mean([r.consistency_se for r in results])
    assert bias_all > 0.2 * se and abs(bias_between) < 0.1 * se


def _naive_between(diffs: np.ndarray, prompts: list[str]) -> float:
    """Mean cosine over pairs of rows from different prompts, O(n²)."""
    acc, count = 0.0, 0
    for i in range(len(diffs)):
        for j in range(len(diffs)):
            if i != j and prompts[i] != prompts[j]:
                ni, nj = np.linalg.norm(diffs[i]), np.linalg.norm(diffs[j])
                acc += 0.0 if ni <= 1e-12 or nj <= 1e-12 else float(diffs[i] @ diffs[j] / (ni * nj))
                count += 1
    return acc / count


@pytest.mark.parametrize("sizes", [(3, 3, 3, 3, 3, 3), (1, 4, 2, 3, 2)], ids=["balanced", "unequal"])
def test_leave_one_prompt_out_by_sums_equals_recomputing(sizes: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(sizes))
    prompts = [f"p{k}" for k, m in enumerate(sizes) for _ in range(m)]
    diffs = rng.normal(size=(len(prompts), 5)) + 0.4
    diffs[2] = 0.0  # a zero diff: no direction, cosine 0 with everything
    sums = PromptSums.from_diffs(diffs, prompts)
    loo = leave_one_out(sums)
    labels = sorted(set(prompts))  # PromptSums orders prompts by label
    for k, label in enumerate(labels):
        keep = [i for i, p in enumerate(prompts) if p != label]
        rest, rest_prompts = diffs[keep], [prompts[i] for i in keep]
        assert loo.strength[k] == pytest.approx(np.linalg.norm(rest, axis=1).mean(), rel=1e-12)
        assert loo.consistency[k] == pytest.approx(_naive_between(rest, rest_prompts), abs=1e-12)
        assert loo.consistency_all_pairs[k] == pytest.approx(consistency_naive(rest), abs=1e-12)
        np.testing.assert_allclose(loo.direction[k], rest.mean(axis=0), atol=1e-12)
    res = estimate(diffs, prompts)
    assert res.consistency == pytest.approx(consistency_naive(diffs), abs=1e-12)
    assert res.consistency_estimate == pytest.approx(_naive_between(diffs, prompts), abs=1e-12)
    assert res.strength == pytest.approx(summarize(diffs).strength, rel=1e-12)
    # Strength's SE is the plain delete-one-prompt jackknife
    k = len(labels)
    naive_loo = np.array([np.linalg.norm(diffs[[p != lb for p in prompts]], axis=1).mean() for lb in labels])
    assert res.strength_se == pytest.approx(math.sqrt((k - 1) / k * np.sum((naive_loo - naive_loo.mean()) ** 2)), rel=1e-10)
    if len(set(sizes)) > 1:  # unequal prompts keep the plain (conservative) jackknife for Consistency too
        c_loo = np.array([_naive_between(diffs[[p != lb for p in prompts]], [p for p in prompts if p != lb]) for lb in labels])
        assert res.consistency_se == pytest.approx(math.sqrt((k - 1) / k * np.sum((c_loo - c_loo.mean()) ** 2)), rel=1e-10)


def test_prompt_summaries_and_running_summary_agree_with_diffs() -> None:
    rng = np.random.default_rng(3)
    prompts = [f"p{i // 4}" for i in range(40)]
    diffs = rng.normal(size=(40, 8)) + 0.3
    by_prompt: dict[str, RunningSummary] = {}
    for start in range(0, 40, 6):  # chunks cut across prompts, as a resumed job stores them
        for p in sorted(set(prompts[start : start + 6])):
            rows = [i for i in range(start, min(start + 6, 40)) if prompts[i] == p]
            by_prompt.setdefault(p, RunningSummary(dim=8)).add(diffs[rows])
    a = from_sums(PromptSums.from_summaries([by_prompt[p] for p in sorted(by_prompt)]))
    b = estimate(diffs, prompts)
    assert a.strength_interval == pytest.approx(b.strength_interval)
    assert a.consistency_interval == pytest.approx(b.consistency_interval)
    rep = PromptSums.from_diffs(diffs, prompts).summary().result()
    expected = summarize(diffs)
    assert rep.strength == pytest.approx(expected.strength) and rep.consistency == pytest.approx(expected.consistency)
    np.testing.assert_allclose(rep.direction, expected.direction, rtol=1e-6)


def test_degenerate_input_says_why_and_never_gives_nan() -> None:
    one = estimate(np.ones((4, 3)), ["a"] * 4)
    assert not one.available and "one prompt" in one.reason
    assert one.strength_interval is None and one.consistency_se is None and one.strength == pytest.approx(math.sqrt(3))
    assert "no interval" in one.strength_text()
    zero = estimate(np.zeros((6, 3)), list("aabbcc"))
    assert zero.available and zero.strength_se == 0 and zero.consistency_interval == (0.0, 0.0)
    assert zero.expected_cosine is None  # no Direction to compare
    two = estimate(np.array([[1.0, 0.0], [0.0, 1.0]]), ["a", "b"])
    assert two.available and two.n_clusters == 2
    for res in (one, zero, two):
        text = json.dumps(res.to_dict(), allow_nan=False)  # raises on NaN or inf
        assert type(res).from_dict(json.loads(text)) == res
    with pytest.raises(InvalidInputError):
        estimate(np.ones((3, 2)), ["a", "b"])  # one prompt per diff
    with pytest.raises(InvalidInputError):
        estimate(np.array([[np.nan, 1.0]]), ["a"])


def test_text_shows_value_se_and_interval_to_the_se_second_digit() -> None:
    rng = np.random.default_rng(0)
    res = estimate(3 * (rng.normal(size=(70, 16)) + 0.5), [f"p{i // 2}" for i in range(70)])
    lo, hi = res.strength_interval
    assert 0.1 <= res.strength_se < 1  # two decimals
    assert res.strength_text() == f"{res.strength:.2f} ± {res.strength_se:.2f} (95%: {lo:.2f}–{hi:.2f})"
    lo, hi = res.consistency_interval
    assert 0.01 <= res.consistency_se < 0.1  # three decimals
    assert res.consistency_text() == f"{res.consistency:.3f} ± {res.consistency_se:.3f} (95%: {lo:.3f}–{hi:.3f})"


def test_t_and_normal_distributions() -> None:
    for df, q in [(1, 12.7062047), (2, 4.3026527), (5, 2.5705818), (34, 2.0322445), (139, 1.9771777)]:
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-6)
        assert t_cdf(q, df) == pytest.approx(0.975, abs=1e-7)
    assert t_cdf(0.0, 7) == 0.5 and t_cdf(-2.0, 9) == pytest.approx(1 - t_cdf(2.0, 9))
    assert normal_quantile(0.975) == pytest.approx(1.959963985, abs=1e-8)
    assert normal_cdf(1.959963985) == pytest.approx(0.975, abs=1e-9)


def test_error_model_is_the_t_interval_without_shape_and_agrees_with_its_cdf() -> None:
    plain = ErrorModel(5.0, 0.04, df=34)
    lo, hi = plain.interval()
    assert (lo, hi) == pytest.approx((5.0 - 0.2 * t_quantile(0.975, 34), 5.0 + 0.2 * t_quantile(0.975, 34)))
    for model in (ErrorModel(0.03, 1e-4, slope=0.004, skew=0.5, df=34), ErrorModel(4.0, 0.1, slope=-0.05, skew=-0.4, df=139)):
        lo, hi = model.interval(0.9)
        assert lo < model.estimate < hi
        assert model.cdf(lo) == pytest.approx(0.05, abs=1e-9) and model.cdf(hi) == pytest.approx(0.95, abs=1e-9)
        xs = np.linspace(lo - 1, hi + 1, 200)
        assert np.all(np.diff([model.cdf(x) for x in xs]) >= -1e-12)  # a distribution function
    assert ErrorModel(0.01, 1e-4, df=10, lower_limit=0.0).interval()[0] == 0.0
