"""The CARLoS representation of a LoRA, in pure numpy (no torch, by design).

Given the CLIP-diffs V = {v(x_l(p, s)) - v(x_0(p, s))} of a LoRA:

* Direction   = mean of V                          (what it changes)
* Strength    = mean of ||V_i||                     (how much: substantiality)
* Consistency = mean cosine over pairs i < j of V   (how reliably: volition)

Consistency costs O(n·d) through the unit-vector identity
``sum_{i<j} u_i·u_j = (||sum u_i||^2 - sum ||u_i||^2) / 2``.

Documented conventions for degenerate input (nothing is silently wrong):

* fewer than 2 diffs: Consistency is undefined, :class:`InvalidInputError`;
* a zero diff (the LoRA changed nothing for that pair) has no direction; its
  cosine with every other diff is taken as 0, so it pulls Consistency towards 0
  while still counting in the number of pairs. All-zero diffs give Strength 0,
  Consistency 0 and a zero Direction (a no-effect LoRA);
* NaN/inf anywhere, ragged or non-2-D input: :class:`InvalidInputError`.

:class:`RunningSummary` accumulates the same three quantities from chunks of
diffs (and merges partial summaries), so characterization can resume after an
interruption or be split across workers and still give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carlos.errors import InvalidInputError

#: Norm below which a diff counts as zero (float32 CLIP features are O(1..10)).
ZERO_NORM = 1e-12


@dataclass(frozen=True)
class Representation:
    """Direction, Strength and Consistency of one LoRA, from ``n`` diffs."""

    direction: np.ndarray  # (d,) float32 mean diff, not normalized
    strength: float  # mean L2 norm of the diffs
    consistency: float  # mean pairwise cosine of the diffs
    n: int  # number of diffs summarised

    @property
    def dim(self) -> int:
        return int(self.direction.shape[0])


def as_diffs(diffs: object) -> np.ndarray:
    """Validate and convert diffs to a float64 (n, d) array, or raise."""
    try:
        arr = np.asarray(diffs, dtype=np.float64)
    except (ValueError, TypeError) as e:  # ragged lists land here
        raise InvalidInputError("diffs must be a rectangular (n, d) array of numbers; got ragged or non-numeric input") from e
    if arr.ndim != 2:
        raise InvalidInputError(f"diffs must be 2-D (n, d); got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise InvalidInputError("diffs have dimension 0")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise InvalidInputError(f"diffs contain NaN or inf in {bad} of {arr.shape[0]} rows")
    return arr


def _unit_rows(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    norms = np.linalg.norm(arr, axis=1)
    nonzero = norms > ZERO_NORM
    units = np.zeros_like(arr)
    units[nonzero] = arr[nonzero] / norms[nonzero, None]
    return norms, units, int(nonzero.sum())


def direction(diffs: object) -> np.ndarray:
    """Mean diff (float32), the LoRA's Direction."""
    arr = as_diffs(diffs)
    if arr.shape[0] == 0:
        raise InvalidInputError("Direction needs at least one diff")
    return arr.mean(axis=0).astype(np.float32)


def strength(diffs: object) -> float:
    """Mean L2 norm of the diffs, the LoRA's Strength."""
    arr = as_diffs(diffs)
    if arr.shape[0] == 0:
        raise InvalidInputError("Strength needs at least one diff")
    return float(np.linalg.norm(arr, axis=1).mean())


def consistency(diffs: object) -> float:
    """Mean pairwise cosine over i < j in O(n·d), the LoRA's Consistency."""
    arr = as_diffs(diffs)
    n = arr.shape[0]
    if n < 2:
        raise InvalidInputError(f"Consistency needs at least 2 diffs (pairs); got {n}")
    _, units, n_nonzero = _unit_rows(arr)
    total = units.sum(axis=0)
    return float((total @ total - n_nonzero) / (n * (n - 1)))


def consistency_naive(diffs: object) -> float:
    """O(n²·d) reference for :func:`consistency` (tests and documentation)."""
    arr = as_diffs(diffs)
    n = arr.shape[0]
    if n < 2:
        raise InvalidInputError(f"Consistency needs at least 2 diffs (pairs); got {n}")
    acc, pairs = 0.0, 0
    for i in range(n):
        for j in range(i + 1, n):
            ni, nj = np.linalg.norm(arr[i]), np.linalg.norm(arr[j])
            acc += 0.0 if ni <= ZERO_NORM or nj <= ZERO_NORM else float(arr[i] @ arr[j] / (ni * nj))
            pairs += 1
    return acc / pairs


def summarize(diffs: object) -> Representation:
    """All three quantities in one pass over the diffs."""
    return RunningSummary.from_diffs(diffs).result()


@dataclass
class RunningSummary:
    """Sufficient statistics of a set of diffs; add chunks, merge, then :meth:`result`.

    Holds sum of diffs, sum of norms, sum of unit vectors and the counts, so the
    final representation is identical whatever the chunking or order.
    """

    dim: int
    n: int = 0
    n_nonzero: int = 0
    sum_diff: np.ndarray | None = None
    sum_unit: np.ndarray | None = None
    sum_norm: float = 0.0

    def __post_init__(self) -> None:
        if self.dim <= 0:
            raise InvalidInputError(f"dim must be positive, got {self.dim}")
        if self.sum_diff is None:
            self.sum_diff = np.zeros(self.dim, dtype=np.float64)
        if self.sum_unit is None:
            self.sum_unit = np.zeros(self.dim, dtype=np.float64)

    @classmethod
    def from_diffs(cls, diffs: object) -> RunningSummary:
        arr = as_diffs(diffs)
        summary = cls(dim=arr.shape[1])
        summary.add(arr)
        return summary

    def add(self, diffs: object) -> None:
        """Accumulate a chunk of diffs (shape (k, dim))."""
        arr = as_diffs(diffs)
        if arr.shape[1] != self.dim:
            raise InvalidInputError(f"chunk has dimension {arr.shape[1]}, summary has {self.dim}")
        norms, units, n_nonzero = _unit_rows(arr)
        self.n += arr.shape[0]
        self.n_nonzero += n_nonzero
        self.sum_diff += arr.sum(axis=0)
        self.sum_unit += units.sum(axis=0)
        self.sum_norm += float(norms.sum())

    def merge(self, other: RunningSummary) -> RunningSummary:
        """A new summary of the union of both sets of diffs."""
        if other.dim != self.dim:
            raise InvalidInputError(f"cannot merge dimensions {self.dim} and {other.dim}")
        return RunningSummary(
            dim=self.dim,
            n=self.n + other.n,
            n_nonzero=self.n_nonzero + other.n_nonzero,
            sum_diff=self.sum_diff + other.sum_diff,
            sum_unit=self.sum_unit + other.sum_unit,
            sum_norm=self.sum_norm + other.sum_norm,
        )

    def result(self) -> Representation:
        if self.n < 2:
            raise InvalidInputError(f"a representation needs at least 2 diffs; got {self.n}")
        total = self.sum_unit
        cons = (float(total @ total) - self.n_nonzero) / (self.n * (self.n - 1))
        return Representation(
            direction=(self.sum_diff / self.n).astype(np.float32),
            strength=self.sum_norm / self.n,
            consistency=cons,
            n=self.n,
        )
