"""Text-seeded behaviour search: a query direction without a CLIP text encoder.

The textual retrievers find LoRAs whose *names and descriptions* match the
query. Their stored Directions describe what those LoRAs *do*; a weighted,
outlier-trimmed mean of them is a direction in the corpus's CLIP space that
ranks every LoRA by behaviour, including ones whose text never mentions the
query. Pure numpy over a :class:`CorpusView`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carlos.config import Thresholds
from carlos.core.representation import ZERO_NORM
from carlos.core.view import CorpusView


def _normalise(scores: np.ndarray) -> np.ndarray:
    """Map a retriever's scores to [0, 1]: 0 at or below the median, 1 at the best."""
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
    if s.size == 0:
        return s
    floor, top = float(np.median(s)), float(s.max())
    if top <= floor:
        return np.zeros_like(s)
    return np.clip((s - floor) / (top - floor), 0.0, 1.0)


def textual_seed_scores(sources: dict[str, np.ndarray]) -> np.ndarray:
    """Fuse textual scores: mean of per-source normalised scores (0 = no evidence)."""
    if not sources:
        raise ValueError("at least one textual score vector is needed")
    return np.mean([_normalise(s) for s in sources.values()], axis=0)


@dataclass(frozen=True)
class Seeds:
    direction: np.ndarray | None  # unit vector, None when no LoRA matched the text
    used: list[str]  # lora ids that formed the direction
    trimmed: list[str]  # seeds dropped as outliers
    weights: dict[str, float]  # text weight of each used seed


def seed_direction(
    view: CorpusView,
    text_scores: np.ndarray,
    thresholds: Thresholds,
    *,
    n_seeds: int = 8,
    min_cos: float = 0.0,
    mad_k: float = 2.0,
) -> Seeds:
    """Weighted mean of the best text matches' unit directions, trimmed of outliers.

    Seeds must pass ``thresholds``: a too-unstable LoRA's mean direction is mostly
    noise, a too-strong one dominates everything. A seed whose cosine to the
    weighted mean is below ``max(min_cos, median - mad_k * MAD)`` is dropped and
    the mean recomputed once.
    """
    s = np.asarray(text_scores, dtype=np.float64)
    ok = (s > 0) & thresholds.keeps(*view.values)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return Seeds(None, [], [], {})
    idx = idx[np.argsort(-s[idx], kind="stable")][:n_seeds]
    vecs = view.matrix[idx].astype(np.float64)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    units = vecs / np.maximum(norms, ZERO_NORM)
    w = s[idx]

    def mean(mask: np.ndarray) -> np.ndarray:
        m = (units[mask] * w[mask, None]).sum(axis=0)
        return m / max(np.linalg.norm(m), ZERO_NORM)

    keep = np.ones(idx.size, dtype=bool)
    if idx.size >= 3:
        cos = units @ mean(keep)
        med = np.median(cos)
        mad = np.median(np.abs(cos - med))
        keep = cos >= max(min_cos, med - mad_k * mad)
        if not keep.any():
            keep[np.argmax(cos)] = True
    ids = np.asarray(view.ids)
    return Seeds(
        direction=mean(keep).astype(np.float32),
        used=[str(x) for x in ids[idx[keep]]],
        trimmed=[str(x) for x in ids[idx[~keep]]],
        weights={str(ids[i]): float(s[i]) for i in idx[keep]},
    )
