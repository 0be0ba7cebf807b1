"""Second-order intervals for one estimate from its variance, skewness and mean-variance slope.

Pure Python/numpy (no scipy in the core): Student's t for integer degrees of freedom and the
normal distribution, and :class:`ErrorModel`, which turns an estimate ``θ̂`` with

* ``variance``: its estimated variance (here from the prompt jackknife),
* ``slope``: ``Cov(θ̂, v̂) / Var(θ̂)``, how the variance estimate moves with the estimate
  (for a mean of skewed values, ``μ3 / (K s²)``: a low mean comes with a small SE),
* ``skew``: the skewness of ``θ̂`` itself,

into a confidence distribution ``P(θ <= x)`` and the interval it implies. The first-order
``θ̂ ± t·SE`` assumes both are zero; with skewed prompt effects (a few prompts that the LoRA
changes far more than the rest) or a Consistency near zero (the estimate is then a quadratic
form with a chi-square-like tail) it under-covers on one side. The model corrects both terms of
order ``1/√K``:

* the slope by inverting the test with the variance at each candidate value,
  ``v(x) = v̂ + slope·(x − θ̂)`` (floored at ``v̂/16``): a Wilson-type score interval;
* the skewness by Hall's (1992) monotone cubic transformation of the standardized estimate,
  ``h(w) = w − c(w² − 1) + c²w³/3`` with ``c = skew / 6``, then Student's t with ``df``.

With slope and skew zero it is exactly the t interval. The interval is where the confidence
distribution crosses ``(1 ± level) / 2``, so interval and probabilities always agree.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from carlos.errors import InvalidInputError

#: Largest |skewness| used: beyond it the estimate of the skewness is noise at these K.
MAX_SKEW = 2.0


@dataclass(frozen=True)
class ErrorModel:
    """Estimate, variance, slope and skewness of one quantity (see the module docstring)."""

    estimate: float
    variance: float
    slope: float = 0.0
    skew: float = 0.0
    df: int = 1_000_000
    lower_limit: float | None = None  # the parameter cannot be below this (e.g. 0)

    @property
    def se(self) -> float:
        return math.sqrt(max(self.variance, 0.0))

    def _variance_at(self, x: float) -> float:
        return max(self.variance + self.slope * (x - self.estimate), self.variance / 16)

    def _c(self) -> float:
        return max(-MAX_SKEW, min(MAX_SKEW, self.skew)) / 6

    def cdf(self, x: float) -> float:
        """Confidence that the true value is at most ``x``."""
        if self.lower_limit is not None and x < self.lower_limit:
            return 0.0
        if self.variance <= 0:
            return float(x >= self.estimate)
        w = (self.estimate - x) / math.sqrt(self._variance_at(x))
        return 1.0 - t_cdf(_hall(w, self._c()), self.df)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The central ``level`` interval of :meth:`cdf` (closed form: two quadratics)."""
        if not 0.0 < level < 1.0:
            raise InvalidInputError(f"level must be within (0, 1), got {level}")
        if self.variance <= 0:
            return (self.estimate, self.estimate)
        q = t_quantile(0.5 + level / 2, self.df)
        c = self._c()
        lo = self.estimate + self._offset(_hall_inverse(q, c))
        hi = self.estimate + self._offset(_hall_inverse(-q, c))
        if self.lower_limit is not None:
            lo, hi = max(lo, self.lower_limit), max(hi, self.lower_limit)
        return (lo, hi)

    def _offset(self, w: float) -> float:
        """``δ`` with ``−δ = w·sqrt(v(θ̂ + δ))``: where the standardized estimate equals ``w``."""
        v, b = self.variance, self.slope
        root = math.sqrt((w * w * b) ** 2 + 4 * w * w * v)
        delta = (w * w * b - root) / 2 if w > 0 else (w * w * b + root) / 2
        if v + b * delta < v / 16:  # the variance floor of _variance_at
            delta = -w * math.sqrt(v / 16)
        return delta


def _hall(w: float, c: float) -> float:
    """Hall's monotone cubic: ``w − c(w² − 1) + c²w³/3`` (derivative ``(1 − cw)² ≥ 0``)."""
    return w - c * (w * w - 1) + c * c * w**3 / 3


def _hall_inverse(z: float, c: float) -> float:
    if abs(c) < 1e-9:
        return z
    inner = 1 - 3 * c * (z - c)
    return (1 - math.copysign(abs(inner) ** (1 / 3), inner)) / c


# -- distributions ----------------------------------------------------------------------------------
def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def normal_quantile(p: float) -> float:
    """Inverse of :func:`normal_cdf` by bisection (p in (0, 1))."""
    if not 0.0 < p < 1.0:
        raise InvalidInputError(f"p must be within (0, 1), got {p}")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if normal_cdf(mid) < p else (lo, mid)
        if hi - lo < 1e-13:
            break
    return (lo + hi) / 2


def t_cdf(t: float, df: int) -> float:
    """Student's t CDF for integer ``df`` >= 1 (closed forms of Abramowitz & Stegun 26.7.3-4;
    the normal beyond 400 degrees of freedom, where they differ by < 1e-3 of a tail)."""
    if df < 1:
        raise InvalidInputError(f"degrees of freedom must be >= 1, got {df}")
    if df > 400:
        return normal_cdf(t)
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd
        acc, term = 0.0, math.cos(theta)
        for j in range(1, (df - 1) // 2 + 1):
            acc += term
            term *= c2 * (2 * j) / (2 * j + 1)
        a = 2 / math.pi * (theta + s * acc) if df > 1 else 2 * theta / math.pi
    else:
        acc, term = 0.0, 1.0
        for j in range(1, df // 2 + 1):
            acc += term
            term *= c2 * (2 * j - 1) / (2 * j)
        a = s * acc
    return 0.5 + math.copysign(a / 2, t)


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """Inverse of :func:`t_cdf` by bisection (p in (0, 1))."""
    if not 0.0 < p < 1.0:
        raise InvalidInputError(f"p must be within (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2
