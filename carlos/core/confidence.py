"""The risk class of a characterization with how sure it is: "review (97%)" or "uncertain: …".

Pure numpy. :func:`risk_call` turns the intervals of :mod:`carlos.core.uncertainty` and the
thresholds in force into the probability of each risk class of :func:`carlos.core.risk.annotate`
(too strong, too unstable, review, low risk). Strength and Consistency each have a confidence
distribution (:class:`carlos.core.intervals.ErrorModel`, the same one the 95 % intervals come
from, so a threshold outside the interval is always at least 97.5 % on one side); they are joined
by a Gaussian copula with the jackknife correlation of their errors (the two estimates move
together: a prompt the LoRA changes strongly and alike raises both). A class is *settled* when it
has at least 95 %; otherwise the label names the fewest classes that together reach 95 %.

Corpus rows carry no per-pair data: they get :data:`NO_INTERVAL`, never an invented interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from carlos.config import Thresholds
from carlos.core.intervals import ErrorModel, normal_cdf, normal_quantile
from carlos.core.risk import RISK_CLASSES
from carlos.core.uncertainty import Uncertainty

#: What a LoRA without per-pair data (a corpus row) says instead of a confidence.
NO_INTERVAL = "no per-pair data: no interval"


@dataclass(frozen=True)
class RiskCall:
    """The risk class of one characterization with its probability."""

    label: str  # "review (97%)", "uncertain: too unstable or low risk", or why there is none
    risk_class: str | None  # the class when settled at ``level``, else None
    probability: float | None  # of the most probable class
    probabilities: dict[str, float]  # every class (empty: no interval)
    settled: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_uncertainty(value: Uncertainty | Mapping[str, Any] | None) -> Uncertainty | None:
    """An :class:`Uncertainty` from itself, its ``to_dict()`` (provenance) or None."""
    if value is None or isinstance(value, Uncertainty):
        return value
    return Uncertainty.from_dict(dict(value))


def risk_call(
    uncertainty: Uncertainty | Mapping[str, Any] | None,
    thresholds: Thresholds,
    review_cuts: tuple[float, float] | None = None,
    *,
    level: float = 0.95,
) -> RiskCall:
    """Probability of each risk class for the full-protocol values, given one run's uncertainty.

    ``review_cuts`` (Strength, Consistency) are where the corpus's review region starts
    (``frame.attrs`` of :func:`carlos.core.risk.annotate`), held fixed; without them there is no
    review class. ``None`` (a corpus row): :data:`NO_INTERVAL`.
    """
    u = as_uncertainty(uncertainty)
    if u is None:
        return RiskCall(NO_INTERVAL, None, None, {}, False)
    s_model, c_model = u.strength_model(), u.consistency_model()
    if not u.available or s_model is None or c_model is None:
        return RiskCall(f"no interval: {u.reason or 'unavailable'}", None, None, {}, False)
    inf = math.inf
    s_max = inf if thresholds.strength_max is None else thresholds.strength_max
    c_min = -inf if thresholds.consistency_min is None else thresholds.consistency_min
    rho = u.strength_consistency_corr or 0.0

    def box(x0: float, x1: float, y0: float, y1: float) -> float:
        return _box(_z(s_model, x0), _z(s_model, x1), _z(c_model, y0), _z(c_model, y1), rho)

    p = {"too strong": 1.0 - box(-inf, s_max, -inf, inf), "too unstable": box(-inf, s_max, -inf, c_min)}
    cuts = review_cuts if review_cuts is not None and bool(np.isfinite(review_cuts).all()) else None
    p["review"] = box(cuts[0], s_max, max(c_min, cuts[1]), inf) if cuts else 0.0
    p["low risk"] = 1.0 - sum(p.values())
    p = {c: min(max(p[c], 0.0), 1.0) for c in RISK_CLASSES}
    ranked = sorted(RISK_CLASSES, key=lambda c: -p[c])
    best = ranked[0]
    if p[best] >= level:
        return RiskCall(f"{best} ({_pct(p[best])})", best, p[best], p, True)
    chosen, total = [], 0.0
    for c in ranked:
        chosen.append(c)
        total += p[c]
        if total >= level:
            break
    return RiskCall("uncertain: " + " or ".join(chosen), None, p[best], p, False)


def risk_calls(
    lora_ids: Iterable[str],
    uncertainties: Mapping[str, Any],
    thresholds: Thresholds,
    review_cuts: tuple[float, float] | None = None,
) -> list[str]:
    """:func:`risk_call` labels for many LoRAs; ids missing from ``uncertainties`` get :data:`NO_INTERVAL`."""
    return [risk_call(uncertainties.get(i), thresholds, review_cuts).label for i in lora_ids]


def threshold_probabilities(uncertainty: Uncertainty | Mapping[str, Any] | None, thresholds: Thresholds) -> dict[str, float | None]:
    """P(full-protocol Strength > strength_max) and P(Consistency < consistency_min), or None."""
    u = as_uncertainty(uncertainty)
    s_model = u.strength_model() if u is not None else None
    c_model = u.consistency_model() if u is not None else None
    out: dict[str, float | None] = {"over_strength": None, "under_consistency": None}
    if s_model is not None and thresholds.strength_max is not None:
        out["over_strength"] = 1.0 - s_model.cdf(thresholds.strength_max)
    if c_model is not None and thresholds.consistency_min is not None:
        out["under_consistency"] = c_model.cdf(thresholds.consistency_min)
    return out


def _pct(p: float) -> str:
    return ">99%" if p > 0.99 else f"{math.floor(p * 100):.0f}%"


def _z(model: ErrorModel, x: float) -> float:
    """The normal score of ``x`` under the model's confidence distribution (±inf at the ends)."""
    if math.isinf(x):
        return x
    p = model.cdf(x)
    if p <= 1e-15:
        return -math.inf
    if p >= 1 - 1e-15:
        return math.inf
    return normal_quantile(p)


def _box(x0: float, x1: float, y0: float, y1: float, rho: float) -> float:
    """P(x0 < X <= x1, y0 <= Y < y1) for standard bivariate normal (X, Y) with correlation ``rho``."""
    a, b = max(x0, -9.0), min(x1, 9.0)
    if a >= b or y0 >= y1:
        return 0.0
    rho = min(max(rho, -0.999), 0.999)
    x = np.linspace(a, b, 1201)
    root = math.sqrt(1 - rho * rho)
    lo = _phi((y0 - rho * x) / root) if y0 > -math.inf else 0.0
    hi = _phi((y1 - rho * x) / root) if y1 < math.inf else 1.0
    f = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi) * (hi - lo)
    return float(np.trapezoid(f, x))


_phi = np.vectorize(normal_cdf, otypes=[float])
