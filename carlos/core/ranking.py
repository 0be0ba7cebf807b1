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

from carlos.config import Thresholds
from carlos.core.index import top_within
from carlos.core.view import CorpusView
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


def _masks(view: CorpusView, thresholds: Thresholds, skip: frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
    """(passes the thresholds, may be ranked at all) per row of ``view``."""
    keep = thresholds.keeps(*view.values)
    candidate = np.ones(len(view), dtype=bool)
    for lid in skip:
        if (i := view.find(lid)) is not None:
            candidate[i] = False
    return keep, candidate


def _result(
    view: CorpusView,
    *,
    retriever: str,
    query: str,
    thresholds: Thresholds,
    hits: tuple[np.ndarray, np.ndarray],
    excluded: tuple[np.ndarray, np.ndarray],
    n_candidates: int,
    n_excluded: int,
    notes: list[str] | None,
    info: dict[str, Any] | None,
) -> SearchResult:
    strength, consistency = view.values
    s_pct, c_pct = view.percentiles
    ids, names = view.frame["lora_id"], view.frame["name"]
    versions = view.frame.get("version_id")

    def hit(i: int, score: float, r: int, reasons: tuple[str, ...]) -> SearchHit:
        vid = None if versions is None else versions.iat[i]
        return SearchHit(
            rank=r,
            lora_id=str(ids.iat[i]),
            name=str(names.iat[i]),
            score=float(score),
            strength=float(strength[i]),
            consistency=float(consistency[i]),
            strength_pct=float(s_pct[i]),
            consistency_pct=float(c_pct[i]),
            flags=reasons + view.quality_flags_of(i),
            retriever=retriever,
            version_id=None if vid is None or pd.isna(vid) else int(vid),
            excluded_because=reasons,
        )

    return SearchResult(
        retriever=retriever,
        query=query,
        hits=[hit(int(i), s, r + 1, ()) for r, (i, s) in enumerate(zip(*hits))],
        excluded=[
            hit(int(i), s, r + 1, tuple(thresholds.exclusion_reasons(strength[i], consistency[i])))
            for r, (i, s) in enumerate(zip(*excluded))
        ],
        n_candidates=n_candidates,
        n_excluded=n_excluded,
        thresholds=thresholds,
        notes=list(notes or []),
        info=dict(info or {}),
    )


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
    """Filter by thresholds, drop ``skip`` ids, and take the top ``top_k`` by score
    (for retrievers that score every LoRA; direction retrievers use :func:`rank_direction`)."""
    top_k = check_top_k(top_k)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(view),):
        raise InvalidInputError(f"expected {len(view)} scores, got shape {scores.shape}")
    keep, candidate = _masks(view, thresholds, skip)
    candidate &= np.isfinite(scores)
    return _result(
        view,
        retriever=retriever,
        query=query,
        thresholds=thresholds,
        hits=top_within(scores, top_k, candidate & keep),
        excluded=top_within(scores, top_k, candidate & ~keep),
        n_candidates=int(candidate.sum()),
        n_excluded=int((candidate & ~keep).sum()),
        notes=notes,
        info=info,
    )


def _checked_direction(view: CorpusView, direction: np.ndarray) -> np.ndarray:
    q = np.asarray(direction, dtype=np.float32).ravel()
    if view.matrix.shape[1:] != q.shape:
        raise InvalidInputError(
            f"a {q.shape[0]}-d direction cannot be compared with the {view.embedder} "
            f"space ({view.matrix.shape[1]}-d): characterize with the matching CLIP model"
        )
    if not np.isfinite(q).all():
        raise InvalidInputError("query direction contains NaN or inf")
    if float(np.linalg.norm(q)) <= 1e-12:
        raise InvalidInputError("query direction is the zero vector: it has no direction to match")
    return q


def rank_direction(
    view: CorpusView,
    direction: np.ndarray,
    *,
    retriever: str,
    query: str,
    thresholds: Thresholds,
    top_k: int,
    skip: frozenset[str] = frozenset(),
    notes: list[str] | None = None,
    info: dict[str, Any] | None = None,
) -> SearchResult:
    """:func:`rank` by cosine to ``direction``, through the view's exact top-k index: the
    same answer as scoring every LoRA, without sorting (or, at scale, scanning in float32) all of them."""
    top_k = check_top_k(top_k)
    q = _checked_direction(view, direction)
    keep, candidate = _masks(view, thresholds, skip)
    if len(view) == 0:
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0))
        hits = excl = empty
    else:
        (h_rows, h_scores, _), (e_rows, e_scores, _) = view.index.search_masks(q, top_k, [candidate & keep, candidate & ~keep])
        hits, excl = (h_rows, h_scores), (e_rows, e_scores)
    return _result(
        view,
        retriever=retriever,
        query=query,
        thresholds=thresholds,
        hits=hits,
        excluded=excl,
        n_candidates=int(candidate.sum()),
        n_excluded=int((candidate & ~keep).sum()),
        notes=notes,
        info=info,
    )


def similar(view: CorpusView, lora_id: str, *, thresholds: Thresholds, top_k: int = 10) -> SearchResult:
    """LoRAs whose Direction is closest (cosine) to ``lora_id``'s: 'behaves like …'."""
    i = view.row_of(lora_id)
    return rank_direction(
        view, view.matrix[i], retriever="similar", query=lora_id, thresholds=thresholds, top_k=top_k, skip=frozenset({lora_id})
    )


def by_direction(
    view: CorpusView,
    direction: np.ndarray,
    *,
    thresholds: Thresholds,
    top_k: int = 10,
    retriever: str = "by-direction",
    query: str = "",
    skip: frozenset[str] = frozenset(),
) -> SearchResult:
    """Rank the corpus by cosine to any direction (an upload's, a query's)."""
    return rank_direction(view, direction, retriever=retriever, query=query, thresholds=thresholds, top_k=top_k, skip=skip)
