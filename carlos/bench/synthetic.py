"""Synthetic corpora shaped like the released one, for the scale benchmark.

:class:`CorpusModel` fits the 740 released directions with a low-rank + diagonal
Gaussian over *unit* directions (mean, top principal components, per-dimension
residual) and resamples real (Strength, Consistency, norm ratio) triples with a
small multiplicative jitter. The norm ratio matters: in the real corpus
``||Direction||`` tracks ``Strength * sqrt(Consistency)`` (r > 0.95), because a
mean of diffs is long only when the diffs are long *and* agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from carlos.config import Thresholds
from carlos.core.index import BLOCK_ROWS
from carlos.core.representation import ZERO_NORM
from carlos.errors import InvalidInputError


@dataclass(frozen=True)
class CorpusModel:
    """Low-rank + diagonal Gaussian of unit directions and resampled value triples."""

    mean: np.ndarray  # (d,) mean unit direction
    components: np.ndarray  # (r, d) orthonormal principal axes of the centred unit directions
    sdev: np.ndarray  # (r,) standard deviation along each axis
    resid_sdev: np.ndarray  # (d,) per-dimension std of what the axes leave
    triples: np.ndarray  # (n_real, 3): strength, consistency, ||direction|| / (str * sqrt(cons))
    jitter: float = 0.05  # log-normal sigma applied to resampled strength and consistency

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def fit(cls, matrix: np.ndarray, strength: np.ndarray, consistency: np.ndarray, *, rank: int = 64, jitter: float = 0.05) -> CorpusModel:
        """Fit on real directions and their values (rows aligned)."""
        m = np.asarray(matrix, dtype=np.float64)
        s = np.asarray(strength, dtype=np.float64)
        c = np.asarray(consistency, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] < 3 or s.shape != (m.shape[0],) or c.shape != s.shape:
            raise InvalidInputError("fit needs an (n >= 3, d) matrix and n strengths and consistencies")
        norms = np.linalg.norm(m, axis=1)
        ok = (norms > ZERO_NORM) & (s > 0) & (c > 0)
        u = m[ok] / norms[ok, None]
        mean = u.mean(axis=0)
        centred = u - mean
        rank = int(min(rank, centred.shape[0] - 1, centred.shape[1]))
        _, sv, vt = np.linalg.svd(centred, full_matrices=False)
        comps = vt[:rank]
        resid = centred - (centred @ comps.T) @ comps
        ratio = norms[ok] / (s[ok] * np.sqrt(c[ok]))
        return cls(
            mean=mean,
            components=comps,
            sdev=sv[:rank] / np.sqrt(centred.shape[0] - 1),
            resid_sdev=resid.std(axis=0),
            triples=np.stack([s[ok], c[ok], ratio], axis=1),
            jitter=float(jitter),
        )

    def sample(self, n: int, *, seed: int = 0, block: int = BLOCK_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Blocks of (float32 directions, strength, consistency) totalling ``n`` rows."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidInputError(f"n must be a non-negative int, got {n!r}")
        rng = np.random.default_rng(seed)
        for start in range(0, n, block):
            k = min(block, n - start)
            z = rng.standard_normal((k, self.components.shape[0])) * self.sdev
            u = self.mean + z @ self.components + rng.standard_normal((k, self.dim)) * self.resid_sdev
            u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), ZERO_NORM)
            pick = self.triples[rng.integers(0, len(self.triples), size=k)]
            s = pick[:, 0] * np.exp(rng.normal(0.0, self.jitter, size=k))
            c = np.clip(pick[:, 1] * np.exp(rng.normal(0.0, self.jitter, size=k)), 1e-6, 1.0)
            norm = s * np.sqrt(c) * pick[:, 2]
            yield (u * norm[:, None]).astype(np.float32), s, c


def corpus_statistics(
    matrix: np.ndarray,
    strength: np.ndarray,
    consistency: np.ndarray,
    *,
    thresholds: Thresholds | None = None,
    sample: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Summary numbers to compare a synthetic corpus with the real one."""
    t = thresholds or Thresholds()
    m = np.asarray(matrix, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(m), size=min(sample, len(m)), replace=False)
    norms = np.linalg.norm(m, axis=1)
    u = m[idx] / np.maximum(norms[idx, None], ZERO_NORM)
    cos = u @ u.T
    iu = np.triu_indices(len(idx), 1)
    centred = u - u.mean(axis=0)
    ev = np.linalg.svd(centred, compute_uv=False) ** 2
    s, c = np.asarray(strength, dtype=np.float64), np.asarray(consistency, dtype=np.float64)
    return {
        "n": int(len(m)),
        "mean_norm": float(norms.mean()),
        "mean_pairwise_cos": float(cos[iu].mean()),
        "std_pairwise_cos": float(cos[iu].std()),
        "var_top16_pcs": float(ev[:16].sum() / ev.sum()),
        "strength_mean": float(s.mean()),
        "consistency_mean": float(c.mean()),
        "corr_strength_consistency": float(np.corrcoef(s, c)[0, 1]),
        "corr_norm_strength": float(np.corrcoef(norms, s)[0, 1]),
        "share_over_strength": float((~replace(t, consistency_min=None).keeps(s, c)).mean()),
        "share_under_consistency": float((~replace(t, strength_max=None).keeps(s, c)).mean()),
    }
