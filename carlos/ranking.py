"""Typed search results and the one ranking routine every retriever ends in.

A retriever produces one score per LoRA of a :class:`CorpusView`; ranking
applies the Strength/Consistency filters, keeps what was filtered (so nothing
is hidden silently) and returns a :class:`SearchResult`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from carlos.catalog import CorpusView
from carlos.config import Thresholds
from carlos.errors import InvalidInputError

MAX_TOP_K = 1000


@dataclass(frozen=True)
class SearchHit:
    """One ranked LoRA."""

    rank: int
    lora_id: str
    name: str
    score: float
    strength: float
    consistency: float
    strength_pct: float
    consistency_pct: float
    flags: tuple[str, ...]
    retriever: str
    version_id: int | None = None
    excluded_because: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flags"] = list(self.flags)
        d["excluded_because"] = list(self.excluded_because)
        return d


@dataclass(frozen=True)
class SearchResult:
    """Hits that passed the filters, plus the best of those the filters removed."""

    retriever: str
    query: str
    hits: list[SearchHit]
    excluded: list[SearchHit]  # best-scoring filtered LoRAs, to show on request
    n_candidates: int  # LoRAs scored
    n_excluded: int  # of them, removed by the thresholds
    thresholds: Thresholds
    notes: list[str] = field(default_factory=list)  # e.g. truncation, text-seeded label
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "retriever": self.retriever,
            "query": self.query,
            "hits": [h.to_dict() for h in self.hits],
            "excluded": [h.to_dict() for h in self.excluded],
            "n_candidates": self.n_candidates,
            "n_excluded": self.n_excluded,
            "thresholds": asdict(self.thresholds),
            "notes": list(self.notes),
            "info": self.info,
        }


def check_top_k(top_k: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInputError(f"top_k must be an integer between 1 and {MAX_TOP_K}, got {top_k!r}")
    return int(top_k)


def rank(
    view: CorpusView,
    scores: np.ndarray,
    *,
    retriever: str,
    query: str,
    thresholds: Thresholds,
    top_k: int,
    skip: frozenset[str] = frozenset(),
    notes: list[str] | None = None,
    info: dict[str, Any] | None = None,
) -> SearchResult:
    """Filter by thresholds, drop ``skip`` ids, and take the top ``top_k`` by score."""
    top_k = check_top_k(top_k)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(view),):
        raise InvalidInputError(f"expected {len(view)} scores, got shape {scores.shape}")
    frame = view.frame
    strength = frame["strength"].to_numpy()
    consistency = frame["consistency"].to_numpy()
    keep = np.ones(len(view), dtype=bool)
    if thresholds.strength_max is not None:
        keep &= strength <= thresholds.strength_max
    if thresholds.consistency_min is not None:
        keep &= consistency >= thresholds.consistency_min
    candidate = np.ones(len(view), dtype=bool)
    if skip:
        candidate &= ~frame["lora_id"].isin(list(skip)).to_numpy()
    candidate &= np.isfinite(scores)
    s_pct, c_pct = view.percentiles
    quality = view.quality_flags

    def top(mask: np.ndarray) -> list[int]:
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return []
        # stable: ties keep corpus order
        order = idx[np.argsort(-scores[idx], kind="stable")]
        return order[:top_k].tolist()

    def hit(i: int, r: int, reasons: tuple[str, ...]) -> SearchHit:
        row = frame.iloc[i]
        flags = list(reasons) + list(quality[i])
        vid = row.get("version_id")
        return SearchHit(
            rank=r,
            lora_id=str(row["lora_id"]),
            name=str(row["name"]),
            score=float(scores[i]),
            strength=float(strength[i]),
            consistency=float(consistency[i]),
            strength_pct=float(s_pct[i]),
            consistency_pct=float(c_pct[i]),
            flags=tuple(flags),
            retriever=retriever,
            version_id=None if pd.isna(vid) else int(vid),
            excluded_because=reasons,
        )

    hits = [hit(i, r + 1, ()) for r, i in enumerate(top(candidate & keep))]
    excluded = [
        hit(i, r + 1, tuple(thresholds.exclusion_reasons(strength[i], consistency[i])))
        for r, i in enumerate(top(candidate & ~keep))
    ]
    return SearchResult(
        retriever=retriever,
        query=query,
        hits=hits,
        excluded=excluded,
        n_candidates=int(candidate.sum()),
        n_excluded=int((candidate & ~keep).sum()),
        thresholds=thresholds,
        notes=list(notes or []),
        info=dict(info or {}),
    )


def view_cosine(view: CorpusView, direction: np.ndarray) -> np.ndarray:
    """Cosine of every LoRA of ``view`` with ``direction`` (no copy of the matrix)."""
    q = np.asarray(direction, dtype=np.float32).ravel()
    if view.matrix.shape[1:] != q.shape:
        raise InvalidInputError(
            f"a {q.shape[0]}-d direction cannot be compared with the {view.embedder} "
            f"space ({view.matrix.shape[1]}-d): characterize with the matching CLIP model"
        )
    if not np.isfinite(q).all():
        raise InvalidInputError("query direction contains NaN or inf")
    qn = float(np.linalg.norm(q))
    if qn <= 1e-12:
        raise InvalidInputError("query direction is the zero vector: it has no direction to match")
    return view.unit_matrix @ (q / qn)


def similar(
    view: CorpusView, lora_id: str, *, thresholds: Thresholds, top_k: int = 10
) -> SearchResult:
    """LoRAs whose Direction is closest (cosine) to ``lora_id``'s: 'behaves like …'."""
    i = view.row_of(lora_id)
    scores = view.unit_matrix @ view.unit_matrix[i]
    return rank(view, scores, retriever="similar", query=lora_id, thresholds=thresholds,
                top_k=top_k, skip=frozenset({lora_id}))  # fmt: skip


def by_direction(
    view: CorpusView, direction: np.ndarray, *, thresholds: Thresholds, top_k: int = 10,
    retriever: str = "by-direction", query: str = "", skip: frozenset[str] = frozenset(),
) -> SearchResult:  # fmt: skip
    """Rank the corpus by cosine to any direction (an upload's, a query's)."""
    return rank(view, view_cosine(view, direction), retriever=retriever, query=query, thresholds=thresholds,
                top_k=top_k, skip=skip)  # fmt: skip
