"""The ``adaptive`` protocol's stopping rule and pair schedule (pure numpy).

A characterization at the paper's protocol costs 4,480 LoRA images. Most LoRAs are settled
long before: their risk class cannot change and their Direction is as good as the full
protocol's for retrieval. This module says, from the running per-prompt sums
(:class:`carlos.core.uncertainty.PromptSums`), whether to stop and why.

**Target: the full protocol on the same images.** The adaptive pairs are a subset of the
paper's 280 prompts × 16 images, so what matters is how far the estimate is from the value
the full protocol would give on the same LoRA, not from the unlimited-prompt value. The
jackknife variance (for unlimited prompts) is multiplied by the finite-population factor
``f = 1 − n / 4,480``. With ``K`` of the 280 prompts and ``m`` of the 16 images, the exact
two-stage factors are ``1 − K/280`` (prompt part) and ``1 − m/16`` (seed part), both at most
``f`` (``n/4480 = (K/280)(m/16)``): ``f`` never understates the distance to the full protocol,
and at 4,480 pairs it is 0, as it should be.

**The rule** (:func:`decide`), with every interval at ``confidence`` (95 %) after the factor:

1. never fewer than ``min_pairs``; at ``max_pairs`` stop: "reached the paper's 4,480 pairs";
2. the filter class under the thresholds in force is *settled* when the interval lies on one
   side of every threshold that decides it: **too strong** (Strength above ``strength_max``,
   whatever the Consistency), **too unstable** (Strength below ``strength_max`` and
   Consistency below ``consistency_min``), **retained** (both pass). A LoRA settled as too
   strong or too unstable stops at once: it never enters retrieval, so its Direction and
   intervals need no more images;
3. a retained LoRA stops when, in addition, the expected cosine of its Direction to the full
   protocol's, ``sqrt(|μ|² / (|μ|² + f·T))``, is at least ``target_cosine`` and both intervals
   are narrower than ``strength_half_width`` and ``consistency_half_width``.

**The schedule** (:func:`schedule`): passes of one pair per subcategory (35 pairs). First
every prompt gets image ``j = 0``, a new prompt of each subcategory per pass (8 passes, 280
pairs); then image ``j = 1`` for every prompt, again one prompt per subcategory per pass, and
so on up to ``j = 15``: exactly the paper's 4,480 pairs at the end. A round (one look of the
rule) is one pass, or several once the run is long: it adds at least ``growth`` (10 %) of the
pairs so far (…, 350, 385, 455, 525, …, 4,445, 4,480: 34 rounds instead of 128). Why:

* prompts, not seeds, are the independent draws: the pairs of one prompt share its effect, so
  for a fixed number of LoRA images the error of every statistic is smallest with one image
  per prompt (``σ²_prompt/K + σ²_seed/(K·m)`` at ``n = K·m``); new prompts come first;
* one pair per subcategory per round keeps every round stratified like the paper's prompt set
  (the ``quick`` protocol's 35 subcategories), so an early stop never over-represents one;
* images follow the authors' order ``j = 0, 1, 2, …`` (image j's noise is fixed by j), so every
  adaptive pair is a pair of the paper's protocol and a run can be continued to the full one;
* base images are shared by all LoRAs (cached), so only LoRA images (pairs) cost;
* geometric rounds bound the overshoot past the first round where the rule would stop to
  about 10 % of the pairs, and cut the number of looks: each look at 95 % is a chance to stop
  on a fluctuation (optional stopping), and a look at 280 prompts costs ~20 ms of jackknife.

Reasons are short stable strings (:data:`REASONS`), meant for storage and tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from carlos.config import Thresholds
from carlos.core.intervals import ErrorModel
from carlos.core.uncertainty import PromptSums, Uncertainty, from_sums
from carlos.errors import InvalidInputError

#: The paper's protocol: 280 prompts × 16 images.
PAPER_PROMPTS, PAPER_IMAGES = 280, 16
PAPER_PAIRS = PAPER_PROMPTS * PAPER_IMAGES

FILTER_CLASSES = ("too strong", "too unstable", "retained")
SETTLED_DIRECTION = "direction and intervals settled"
REASONS = (
    "risk class settled: too strong",
    "risk class settled: too unstable",
    SETTLED_DIRECTION,
    "reached the paper's 4,480 pairs",
)


@dataclass(frozen=True)
class AdaptiveSettings:
    """When an ``adaptive`` characterization stops (see the module docstring)."""

    confidence: float = 0.95  # of every interval the rule reads
    min_pairs: int = 70  # never stop before (two rounds: 70 prompts, the ``quick`` protocol's pair count)
    max_pairs: int = PAPER_PAIRS  # the paper's protocol: never more
    target_cosine: float = 0.99  # expected cosine of the Direction to the full protocol's (retained LoRAs)
    strength_half_width: float = 0.25  # Strength interval half-width (about 4 % of the corpus median, 5.8)
    consistency_half_width: float = 0.01  # Consistency interval half-width (a quarter of the 0.041 threshold)
    pairs_per_round: int = 35  # one pair per subcategory: every round is a whole number of these
    growth: float = 0.1  # a round adds at least this share of the pairs so far (fewer looks; see schedule)

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise InvalidInputError(f"confidence must be within (0, 1), got {self.confidence}")
        if not 2 <= self.min_pairs <= self.max_pairs:
            raise InvalidInputError(f"need 2 <= min_pairs <= max_pairs, got {self.min_pairs} and {self.max_pairs}")
        if not 0.0 < self.target_cosine <= 1.0:
            raise InvalidInputError(f"target_cosine must be within (0, 1], got {self.target_cosine}")
        if self.strength_half_width <= 0 or self.consistency_half_width <= 0 or self.pairs_per_round < 1:
            raise InvalidInputError("half-widths and pairs_per_round must be positive")
        if not 0.0 <= self.growth <= 1.0:
            raise InvalidInputError(f"growth must be within [0, 1], got {self.growth}")

    def round_ends(self, total: int | None = None) -> list[int]:
        """Pairs done at the end of each round: steps of ``pairs_per_round``, and of at least
        ``growth`` times the pairs so far, up to ``total`` (default ``max_pairs``)."""
        total = min(total or self.max_pairs, self.max_pairs)
        step, ends, n = self.pairs_per_round, [], 0
        while n < total:
            n = min(n + step * max(1, math.ceil(self.growth * n / step - 1e-9)), total)
            ends.append(n)
        return ends

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StopDecision:
    """The rule's answer after one round: stop or not, why, and what it read."""

    stop: bool
    reason: str | None  # one of REASONS when stopping; None otherwise
    waiting_for: tuple[str, ...]  # when not stopping: "minimum pairs", "risk class", "direction", "strength", "consistency"
    n: int
    risk_class: str | None  # the settled filter class (FILTER_CLASSES), None while unsettled
    point_class: str | None  # the class of the point estimates
    expected_cosine: float | None  # of the Direction to the full protocol's
    strength_interval: tuple[float, float] | None  # for the full protocol's value
    consistency_interval: tuple[float, float] | None

    def message(self, max_pairs: int = PAPER_PAIRS) -> str:
        """``stopped after 455 of 4,480 pairs: direction and intervals settled`` (or the running state)."""
        if self.stop:
            return f"stopped after {self.n:,} of {max_pairs:,} pairs: {self.reason}"
        return f"{self.n:,} of {max_pairs:,} pairs; waiting for: {', '.join(self.waiting_for)}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["waiting_for"] = list(self.waiting_for)
        for key in ("strength_interval", "consistency_interval"):
            d[key] = None if d[key] is None else [float(v) for v in d[key]]
        return d


def filter_class(strength: Any, consistency: Any, thresholds: Thresholds) -> np.ndarray:
    """Vectorized filter class (:data:`FILTER_CLASSES`) of point values, as ``risk.annotate`` orders them."""
    s, c = np.asarray(strength, dtype=np.float64), np.asarray(consistency, dtype=np.float64)
    strong = ~replace(thresholds, consistency_min=None).keeps(s, c)
    unstable = ~replace(thresholds, strength_max=None).keeps(s, c)
    return np.select([strong, unstable], ["too strong", "too unstable"], default="retained")


def settled_class(s_int: tuple[float, float], c_int: tuple[float, float], thresholds: Thresholds) -> str | None:
    """The filter class when the intervals lie on one side of every threshold that decides it."""
    smax, cmin = thresholds.strength_max, thresholds.consistency_min
    if smax is not None and s_int[0] > smax:
        return "too strong"
    below = smax is None or s_int[1] <= smax
    if below and cmin is not None and c_int[1] < cmin:
        return "too unstable"
    if below and (cmin is None or c_int[0] >= cmin):
        return "retained"
    return None


def to_full_protocol(model: ErrorModel, factor: float) -> ErrorModel:
    """The error model of the distance to the full protocol's value: variance (and slope) × ``factor``."""
    return replace(model, variance=model.variance * factor, slope=model.slope * factor)


def decide(sums: PromptSums, settings: AdaptiveSettings | None = None, thresholds: Thresholds | None = None) -> StopDecision:
    """Whether an adaptive run with these per-prompt sums stops now, and why (the module's rule)."""
    return decide_from(from_sums(sums, confidence=(settings or AdaptiveSettings()).confidence), settings, thresholds)


def decide_from(unc: Uncertainty, settings: AdaptiveSettings | None = None, thresholds: Thresholds | None = None) -> StopDecision:
    """:func:`decide` from an already computed :class:`Uncertainty` (the engine has one per round)."""
    cfg = settings or AdaptiveSettings()
    t = thresholds or Thresholds()
    n = unc.n
    factor = max(1.0 - n / cfg.max_pairs, 0.0)
    point = str(filter_class(unc.strength, unc.consistency if unc.consistency is not None else np.nan, t))
    s_model, c_model = unc.strength_model(), unc.consistency_model()
    s_int = c_int = None
    cls = cos = None
    if s_model is not None and c_model is not None:
        s_int = to_full_protocol(s_model, factor).interval(cfg.confidence)
        c_int = to_full_protocol(c_model, factor).interval(cfg.confidence)
        cls = settled_class(s_int, c_int, t)
        cos = expected_cosine_to_full(unc, factor)
    base = dict(n=n, risk_class=cls, point_class=point, expected_cosine=cos, strength_interval=s_int, consistency_interval=c_int)
    if n >= cfg.max_pairs:
        return StopDecision(stop=True, reason=_max_reason(cfg.max_pairs), waiting_for=(), **base)
    if n < cfg.min_pairs or s_int is None or c_int is None:
        return StopDecision(stop=False, reason=None, waiting_for=("minimum pairs",), **base)
    if cls in ("too strong", "too unstable"):
        return StopDecision(stop=True, reason=f"risk class settled: {cls}", waiting_for=(), **base)
    waiting = []
    if cls is None:
        waiting.append("risk class")
    if cos is None or cos < cfg.target_cosine:
        waiting.append("direction")
    if (s_int[1] - s_int[0]) / 2 > cfg.strength_half_width:
        waiting.append("strength")
    if (c_int[1] - c_int[0]) / 2 > cfg.consistency_half_width:
        waiting.append("consistency")
    if waiting:
        return StopDecision(stop=False, reason=None, waiting_for=tuple(waiting), **base)
    return StopDecision(stop=True, reason=SETTLED_DIRECTION, waiting_for=(), **base)


def _max_reason(max_pairs: int) -> str:
    return "reached the paper's 4,480 pairs" if max_pairs == PAPER_PAIRS else f"reached the maximum of {max_pairs:,} pairs"


def expected_cosine_to_full(unc: Uncertainty, factor: float) -> float | None:
    """``sqrt(|μ|² / (|μ|² + factor·T))`` from the jackknife's ``T`` and its cosine to the unlimited Direction."""
    cos, se = unc.expected_cosine, unc.direction_se
    if cos is None or se is None:
        return None
    if cos <= 0.0:
        return 0.0
    t_var = se * se
    if cos >= 1.0 or t_var == 0.0:
        return 1.0
    mu2 = t_var * cos * cos / (1.0 - cos * cos)
    return math.sqrt(mu2 / (mu2 + factor * t_var))


def schedule(
    subcategories: Sequence[Any], images: int = PAPER_IMAGES, settings: AdaptiveSettings | None = None
) -> list[list[tuple[int, int]]]:
    """Rounds of ``(prompt index, image j)``: the order the module docstring explains.

    ``subcategories`` labels each prompt (in the prompt set's order). Within a subcategory its
    prompts are taken in order; the order takes the next pair of every subcategory in turn,
    image j before image j + 1, and is cut into rounds at :meth:`AdaptiveSettings.round_ends`
    (with 35 subcategories every round is whole passes over them).
    """
    labels = [str(s) for s in subcategories]
    if not labels or images < 1:
        raise InvalidInputError("a schedule needs prompts and at least one image per prompt")
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(labels):
        groups.setdefault(s, []).append(i)
    order: list[tuple[int, int]] = []
    depth = max(len(g) for g in groups.values())
    for j in range(images):
        for rank in range(depth):
            order.extend((g[rank], j) for g in groups.values() if rank < len(g))
    ends = (settings or AdaptiveSettings()).round_ends(len(order))
    return [order[a:b] for a, b in zip([0, *ends[:-1]], ends)]
