"""How far a characterization's Strength, Consistency and Direction are from the full protocol's.

Pure numpy. The pairs of one prompt share the prompt's effect (seeds vary only the noise), so
pairs are **clustered by prompt** and the prompts, not the pairs, are the independent draws:
resampling pairs would understate the error of a 35-prompt ``quick`` run several times over.

**Method: delete-one-prompt (cluster) jackknife**, chosen over a cluster bootstrap because

* it is deterministic (no seed: the same numbers on every machine and re-run) and costs
  O(n·d) in total: per-prompt sums of diffs, norms and unit vectors are formed once, and
  leaving a prompt out is a subtraction (``||U − U_k||² = ||U||² − 2 U·U_k + ||U_k||²``);
* a bootstrap draws some prompts twice, and the pairs between two copies of one prompt are
  within-prompt pairs counted as between-prompt ones: Consistency is biased upwards unless
  every resample is corrected; the jackknife never duplicates a prompt;
* every statistic here is a smooth function of per-prompt sums (a mean over prompts, or a
  degree-2 U-statistic over prompts), where the cluster jackknife variance is consistent
  and its bias is known in closed form.

**Targets**: the values of the same protocol with unlimited prompts (the population the
prompt set samples), the "full protocol" of the dashboard.

* Strength ``E||v||``: the mean norm is unbiased. With equal prompt sizes the jackknife
  pseudo-values are the prompts' mean norms; their skewness gives the interval's second-order
  terms (:class:`carlos.core.intervals.ErrorModel`, Hall's transformation).
* Consistency ``E cos(v_i, v_j)`` over pairs of *different* prompts (the only pairs left with
  unlimited prompts). The paper's all-pairs mean also counts the within-prompt pairs, which
  share the prompt effect: a fraction (M−1)/(n−1) of the pairs (1.4 % for ``quick``) with a
  higher mean cosine, a bias of the order of the standard error at low Consistency. The
  interval is centred on the **between-prompt estimate**
  ``θ̂ = (||U||² − Σ_k ||U_k||²) / (n² − Σ_k m_k²)``, a U-statistic over prompts with kernel
  ``ū_k·ū_l`` (mean unit vectors), unbiased for ``θ = |μ|²``. The all-pairs value stays the
  stored Consistency (comparable with the corpus); both are reported. Three corrections, each
  needed in simulation: the jackknife counts the U-statistic's interaction variance about twice
  (97 % coverage at Consistency 0.02 × 35 prompts), so the excess is subtracted
  (:func:`_second_order_corrected`); a low estimate comes with a small SE (slope; 93 % with the
  plain t interval); and near zero the estimate is a quadratic form with a chi-square-like right
  tail (skewness). Slope and skewness come from the moments of the prompts' mean unit vectors
  (:func:`_consistency_shape`). A transform of the scale (log, sqrt) would not do: they are
  undefined at the zero and negative values an unbiased estimate takes for unstable LoRAs.
* Direction: the expected cosine between the estimated and the unlimited-prompt Direction,
  ``sqrt(|μ|² / (|μ|² + T))``, with ``T`` the jackknife variance of the mean diff summed over
  coordinates and ``|μ|²`` its unbiased between-prompt estimate (first order in ``T/|μ|²``; it
  errs low, i.e. on the cautious side, when the Direction is weak).

Degenerate input (one prompt) gives a result with ``available`` False and the reason; all-zero
diffs give zero standard errors; nothing is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from carlos.core.intervals import ErrorModel
from carlos.core.representation import ZERO_NORM, RunningSummary, as_diffs
from carlos.errors import InvalidInputError

METHOD = "cluster jackknife (delete one prompt), second-order intervals"


@dataclass(frozen=True)
class PromptSums:
    """Per-prompt sufficient statistics (row k: prompt k), from which every estimate follows."""

    counts: np.ndarray  # (K,) pairs per prompt
    nonzero: np.ndarray  # (K,) pairs with a nonzero diff
    sum_diff: np.ndarray  # (K, d)
    sum_unit: np.ndarray  # (K, d)
    sum_norm: np.ndarray  # (K,)

    @property
    def n_clusters(self) -> int:
        return int(self.counts.shape[0])

    @classmethod
    def from_diffs(cls, diffs: object, prompts: Sequence[Any]) -> PromptSums:
        """Group the rows of ``diffs`` (n, d) by ``prompts`` (one label per row)."""
        arr = as_diffs(diffs)
        labels = np.asarray([str(p) for p in prompts], dtype=object)
        if labels.shape != (arr.shape[0],):
            raise InvalidInputError(f"need one prompt per diff: {labels.shape[0]} prompts for {arr.shape[0]} diffs")
        _, inverse = np.unique(labels, return_inverse=True)
        k = int(inverse.max()) + 1 if inverse.size else 0
        norms = np.linalg.norm(arr, axis=1)
        nz = norms > ZERO_NORM
        units = np.zeros_like(arr)
        units[nz] = arr[nz] / norms[nz, None]
        sum_diff = np.zeros((k, arr.shape[1]))
        sum_unit = np.zeros((k, arr.shape[1]))
        np.add.at(sum_diff, inverse, arr)
        np.add.at(sum_unit, inverse, units)
        return cls(
            counts=np.bincount(inverse, minlength=k).astype(np.float64),
            nonzero=np.bincount(inverse, weights=nz.astype(np.float64), minlength=k),
            sum_diff=sum_diff,
            sum_unit=sum_unit,
            sum_norm=np.bincount(inverse, weights=norms, minlength=k),
        )

    @classmethod
    def from_summaries(cls, summaries: Sequence[RunningSummary]) -> PromptSums:
        """One :class:`RunningSummary` per prompt (e.g. accumulated chunk by chunk)."""
        if not summaries:
            raise InvalidInputError("need at least one prompt summary")
        if len({s.dim for s in summaries}) != 1:
            raise InvalidInputError("prompt summaries have different dimensions")
        return cls(
            counts=np.array([s.n for s in summaries], dtype=np.float64),
            nonzero=np.array([s.n_nonzero for s in summaries], dtype=np.float64),
            sum_diff=np.stack([s.sum_diff for s in summaries]),
            sum_unit=np.stack([s.sum_unit for s in summaries]),
            sum_norm=np.array([s.sum_norm for s in summaries], dtype=np.float64),
        )

    def summary(self) -> RunningSummary:
        """The whole run's :class:`RunningSummary` (its ``result()`` is the stored representation)."""
        return RunningSummary(
            dim=int(self.sum_diff.shape[1]),
            n=int(self.counts.sum()),
            n_nonzero=int(self.nonzero.sum()),
            sum_diff=self.sum_diff.sum(axis=0),
            sum_unit=self.sum_unit.sum(axis=0),
            sum_norm=float(self.sum_norm.sum()),
        )


@dataclass(frozen=True)
class Uncertainty:
    """Standard errors and intervals of one characterization (see the module docstring)."""

    method: str
    available: bool  # False: too few prompts for any interval (see ``reason``)
    reason: str | None
    n: int  # pairs
    n_clusters: int  # prompts
    confidence: float
    strength: float
    strength_se: float | None
    strength_interval: tuple[float, float] | None
    consistency: float | None  # the paper's all-pairs mean (the stored value)
    consistency_estimate: float | None  # between-prompt estimate: the interval's centre
    consistency_se: float | None
    consistency_interval: tuple[float, float] | None
    strength_consistency_corr: float | None  # correlation of the two estimates' errors
    direction_se: float | None  # sqrt of the summed per-coordinate variance of the Direction
    expected_cosine: float | None  # E cos(estimated Direction, unlimited-prompt Direction)
    strength_shape: tuple[float, float] | None = None  # (slope, skew) of the ErrorModel
    consistency_shape: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists; no NaN)."""
        d = asdict(self)
        for key in _PAIRS:
            d[key] = None if d[key] is None else [float(v) for v in d[key]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Uncertainty:
        """Back from :meth:`to_dict` (e.g. a representation's provenance)."""
        kw = {f: d.get(f) for f in cls.__dataclass_fields__}
        for key in _PAIRS:
            kw[key] = None if kw[key] is None else (float(kw[key][0]), float(kw[key][1]))
        return cls(**kw)

    def strength_model(self) -> ErrorModel | None:
        """The confidence distribution of the unlimited-prompt Strength (None: no interval)."""
        return _model(self.strength, self.strength_se, self.strength_shape, self.n_clusters)

    def consistency_model(self) -> ErrorModel | None:
        """The confidence distribution of the unlimited-prompt Consistency (None: no interval)."""
        return _model(self.consistency_estimate, self.consistency_se, self.consistency_shape, self.n_clusters)

    def strength_text(self) -> str:
        """``4.12 ± 0.31 (95%: 3.50–4.74)`` (decimals to the SE's second significant digit), or the
        bare value with why there is no interval."""
        return _value_text(self.strength, self.strength_se, self.strength_interval, self.confidence, self.reason)

    def consistency_text(self) -> str:
        """Like :meth:`strength_text`, for the stored (all-pairs) value; the interval is for the
        full-protocol value, so its centre may differ a little from the value shown first."""
        value = self.consistency if self.consistency is not None else float("nan")
        return _value_text(value, self.consistency_se, self.consistency_interval, self.confidence, self.reason)


_PAIRS = ("strength_interval", "consistency_interval", "strength_shape", "consistency_shape")


def _model(estimate: float | None, se: float | None, shape: tuple[float, float] | None, k: int) -> ErrorModel | None:
    if estimate is None or se is None:
        return None
    slope, skew = shape or (0.0, 0.0)
    return ErrorModel(float(estimate), float(se) ** 2, slope=float(slope), skew=float(skew), df=max(k - 1, 1), lower_limit=0.0)


def _value_text(value: float, se: float | None, interval: tuple[float, float] | None, conf: float, reason: str | None) -> str:
    if se is None or interval is None:
        return f"{value:.4g} (no interval: {reason or 'unavailable'})"
    digits = min(max(1 - math.floor(math.log10(se)), 0), 6) if se > 0 else 4
    lo, hi = interval
    return f"{value:.{digits}f} ± {se:.{digits}f} ({conf:.0%}: {lo:.{digits}f}–{hi:.{digits}f})"


def estimate(diffs: object, prompts: Sequence[Any], *, confidence: float = 0.95) -> Uncertainty:
    """Uncertainty of the representation of ``diffs`` (n, d), clustered by ``prompts`` (n labels)."""
    return from_sums(PromptSums.from_diffs(diffs, prompts), confidence=confidence)


def from_sums(sums: PromptSums, *, confidence: float = 0.95) -> Uncertainty:
    """The jackknife over the prompts of ``sums``: O(K·d), plus O(K²·min(K, d)) for the
    Consistency's second-order terms (milliseconds at the paper's 280 prompts × 512)."""
    if not 0.0 < confidence < 1.0:
        raise InvalidInputError(f"confidence must be within (0, 1), got {confidence}")
    k = sums.n_clusters
    n = float(sums.counts.sum())
    if n < 1:
        raise InvalidInputError("no diffs to estimate from")
    strength = float(sums.sum_norm.sum() / n)
    u_tot = sums.sum_unit.sum(axis=0)
    uu = float(u_tot @ u_tot)
    cons_all = (uu - float(sums.nonzero.sum())) / (n * (n - 1)) if n >= 2 else None
    base = dict(method=METHOD, n=int(n), n_clusters=k, confidence=confidence, strength=strength, consistency=cons_all)
    if k < 2:
        why = "one prompt: prompts are the independent draws, at least 2 are needed" if k == 1 else "no prompts"
        return Uncertainty(**base, **dict.fromkeys(_UNAVAILABLE), available=False, reason=why)

    loo = leave_one_out(sums)
    s_out, c_out, d_out = loo.strength, loo.consistency, loo.direction
    sum_m2 = float((sums.counts**2).sum())
    uk2 = np.einsum("kd,kd->k", sums.sum_unit, sums.sum_unit)
    c_hat = float(_between(uu, float(uk2.sum()), n, sum_m2))
    d_tot = sums.sum_diff.sum(axis=0)
    dk2 = np.einsum("kd,kd->k", sums.sum_diff, sums.sum_diff)
    mu2 = float(_between(float(d_tot @ d_tot), float(dk2.sum()), n, sum_m2))

    scale = (k - 1) / k
    ds, dc = s_out - s_out.mean(), c_out - c_out.mean()
    s_var, c_var = scale * float(ds @ ds), scale * float(dc @ dc)
    c_var = _second_order_corrected(c_var, sums)
    dd = d_out - d_out.mean(axis=0)
    t_var = scale * float(np.einsum("kd,kd->", dd, dd))
    corr = float(ds @ dc / math.sqrt((ds @ ds) * (dc @ dc))) if (ds @ ds) > 0 and (dc @ dc) > 0 else 0.0
    s_shape = _mean_shape(k * strength - (k - 1) * s_out, s_var)
    c_shape = _consistency_shape(sums, k * c_hat - (k - 1) * c_out, c_var)
    s_model = ErrorModel(strength, s_var, *s_shape, df=k - 1, lower_limit=0.0)
    c_model = ErrorModel(c_hat, c_var, *c_shape, df=k - 1, lower_limit=0.0)
    if mu2 > 0:
        cos: float | None = math.sqrt(mu2 / (mu2 + t_var))
    else:
        cos = None if not np.any(d_tot) else 0.0  # no detectable Direction: noise only
    return Uncertainty(
        **base,
        available=True,
        reason=None,
        strength_se=s_model.se,
        strength_interval=s_model.interval(confidence),
        consistency_estimate=c_hat,
        consistency_se=c_model.se,
        consistency_interval=c_model.interval(confidence),
        strength_consistency_corr=max(-1.0, min(1.0, corr)),
        direction_se=math.sqrt(t_var),
        expected_cosine=cos,
        strength_shape=s_shape,
        consistency_shape=c_shape,
    )


@dataclass(frozen=True)
class LeaveOneOut:
    """The statistics without prompt k (row k), by subtraction from the totals: O(K·d)."""

    strength: np.ndarray  # (K,) mean norm
    consistency: np.ndarray  # (K,) between-prompt Consistency
    consistency_all_pairs: np.ndarray  # (K,) the paper's all-pairs Consistency
    direction: np.ndarray  # (K, d) mean diff


def leave_one_out(sums: PromptSums) -> LeaveOneOut:
    """Delete-one-prompt values of every statistic (needs at least 2 prompts)."""
    if sums.n_clusters < 2:
        raise InvalidInputError("leaving a prompt out needs at least 2 prompts")
    m = sums.counts
    n = float(m.sum())
    m_out = n - m
    u_tot = sums.sum_unit.sum(axis=0)
    uu = float(u_tot @ u_tot)
    uk2 = np.einsum("kd,kd->k", sums.sum_unit, sums.sum_unit)
    uu_out = uu - 2 * (sums.sum_unit @ u_tot) + uk2  # ||U - U_k||²
    pairs_out = m_out * (m_out - 1)
    z_out = sums.nonzero.sum() - sums.nonzero
    return LeaveOneOut(
        strength=(sums.sum_norm.sum() - sums.sum_norm) / m_out,
        consistency=_between(uu_out, uk2.sum() - uk2, m_out, float((m * m).sum()) - m * m),
        consistency_all_pairs=np.where(pairs_out > 0, (uu_out - z_out) / np.where(pairs_out > 0, pairs_out, 1.0), 0.0),
        direction=(sums.sum_diff.sum(axis=0)[None, :] - sums.sum_diff) / m_out[:, None],
    )


_UNAVAILABLE = (
    "strength_se",
    "strength_interval",
    "consistency_estimate",
    "consistency_se",
    "consistency_interval",
    "strength_consistency_corr",
    "direction_se",
    "expected_cosine",
)


def _mean_shape(pseudo: np.ndarray, var: float) -> tuple[float, float]:
    """(slope, skew) of a mean of K pseudo-values: ``μ3 / (K s²)`` and ``μ3 / (s³ √K)``."""
    k = pseudo.shape[0]
    if k < 3 or var <= 0:
        return (0.0, 0.0)
    c = pseudo - pseudo.mean()
    s2 = float(c @ c) / (k - 1)
    m3 = float(np.sum(c**3)) * k / ((k - 1) * (k - 2))
    return (m3 / (k * s2), m3 / (s2**1.5 * math.sqrt(k))) if s2 > 0 else (0.0, 0.0)


def _consistency_shape(sums: PromptSums, pseudo: np.ndarray, var: float) -> tuple[float, float]:
    """(slope, skew) of the between-prompt Consistency, a U-statistic with kernel ``ū_k·ū_l``.

    With ``Y_k = ū_k − μ`` (covariance Σ) and ``g_k = Y_k·μ`` (Hoeffding's first-order part),
    to order ``1/K`` beyond the variance:
    ``κ3(θ̂) = (8 E g³ + 24 μᵀΣ²μ) / K² + 8 (K−2) tr Σ³ / (K² (K−1)²)`` and
    ``Cov(θ̂, v̂) = (8 E g³ + 16 μᵀΣ²μ) / K² + 8 tr Σ³ / K³``. Near θ = 0 the ``tr Σ³`` terms (a
    chi-square-like quadratic form) dominate; at high θ the negative ``E g³`` (unit vectors
    cannot pass the sphere) does. Estimates: ``8 E g³`` is the third moment of the jackknife
    pseudo-values; ``tr Σ³`` the mean over distinct triples of the centred means' Gram (unbiased);
    ``16 μᵀΣ²μ / K² + 8 tr Σ³ / K³`` is ``Var(θ̂)·4ρ/K`` with ``ρ`` the spread of the means along
    their mean over its squared norm (exact for isotropic Σ, and stable near θ = 0, where a
    plug-in ``|Σ̂ μ̂|²`` is dominated by noise at 35 prompts).
    """
    k = sums.n_clusters
    if k < 5 or var <= 0:
        return (0.0, 0.0)
    u = sums.sum_unit / np.maximum(sums.counts, 1)[:, None]
    mu = u.mean(axis=0)
    mm = float(mu @ mu)
    y = u - mu
    c = pseudo - pseudo.mean()
    m3 = float(np.sum(c**3)) * k / ((k - 1) * (k - 2))  # ≈ 8 E g³
    tr3 = _distinct_triangles(y) / (k * (k - 1) * (k - 2))
    rayleigh = 4 * float(np.var(y @ mu, ddof=1)) / mm / k if mm > 0 else 0.0
    mss = max((rayleigh * var - 8 * tr3 / k**3) * k**2 / 16, 0.0)  # μᵀΣ²μ
    kappa3 = (m3 + 24 * mss) / k**2 + 8 * (k - 2) * tr3 / (k**2 * (k - 1) ** 2)
    return (rayleigh + m3 / (k**2 * var), kappa3 / var**1.5)


def _distinct_triangles(y: np.ndarray) -> float:
    """``Σ (y_i·y_j)(y_j·y_l)(y_l·y_i)`` over distinct i, j, l: the trace of the cubed off-diagonal
    Gram, through the K×K Gram or, when d < K, the d×d one (O(K·d·min(K, d)))."""
    diag = np.einsum("kd,kd->k", y, y)
    if y.shape[0] <= y.shape[1]:
        gram = y @ y.T
        np.fill_diagonal(gram, 0.0)
        return float(np.sum(gram * (gram @ gram)))
    a = y.T @ y  # tr(G³) = tr(A³); (G²)_kk = y_k·A·y_k
    g2_diag = np.einsum("kd,de,ke->k", y, a, y)
    return float(np.sum(a * (a @ a)) - 3 * diag @ g2_diag + 2 * np.sum(diag**3))


def _second_order_corrected(v_jack: float, sums: PromptSums) -> float:
    """The jackknife variance of the between-prompt Consistency, less its known excess.

    With equal prompt sizes the estimate is a degree-2 U-statistic over prompts with kernel
    ``h(k, l) = ū_k·ū_l``. Hoeffding: ``h = θ + g_k + g_l + e_kl``; the true variance is
    ``4ζ1/K + 2δ/(K(K−1))`` but the jackknife's expectation is ``4ζ1/K + 4δ/(K(K−2))``: it counts
    the interaction ``δ = Var e`` about twice, which for an unstable LoRA (small ``ζ1``) is most
    of the variance. ``δ`` is estimated from ``Σ_{k≠l} h²`` (a K×K or d×d Gram) and the spread
    of the row sums. Unequal prompt sizes or K < 5 keep the plain (conservative) jackknife.
    """
    k = sums.n_clusters
    if k < 5 or not np.all(sums.counts == sums.counts[0]) or v_jack <= 0:
        return v_jack
    u = sums.sum_unit / sums.counts[:, None]
    norms2 = np.einsum("kd,kd->k", u, u)
    r = u @ u.sum(axis=0) - norms2  # row sums of h without the diagonal
    mean_h = float(r.sum()) / (k * (k - 1))
    gram = u @ u.T if k <= u.shape[1] else u.T @ u
    h2 = float(np.einsum("ij,ij->", gram, gram)) - float(norms2 @ norms2)
    zeta2 = max(h2 / (k * (k - 1)) - mean_h**2, 0.0)
    rr = float(np.sum((r - r.mean()) ** 2)) / (k - 1)
    zeta1 = max((rr - (k - 2) * zeta2) / ((k - 2) * (k - 4)), 0.0)
    delta = max(zeta2 - 2 * zeta1, 0.0)
    return max(v_jack - delta * (4 / (k * (k - 2)) - 2 / (k * (k - 1))), 2 * delta / (k * (k - 1)))


def _between(total_sq: Any, within_sq: Any, n: Any, sum_m2: Any) -> Any:
    """Mean inner product over pairs from different prompts: (|Σ|² − Σ_k |Σ_k|²) / (n² − Σ_k m_k²)."""
    den = np.asarray(n, dtype=np.float64) ** 2 - sum_m2
    return np.where(den > 0, (np.asarray(total_sq) - within_sq) / np.where(den > 0, den, 1.0), 0.0)
