"""Finding a file's relatives among stored fingerprints: index search, then exact re-ranking.

Stage 1 searches the search vectors of every stored fingerprint by cosine with the direction
index of :mod:`carlos.core.index` (the same exact filtered top-k, with its int8 first pass when
a kernel is given). Stage 2 relates each candidate from the two fingerprints
(:func:`~carlos.weights.relate.sketch_relation`) and, where both files can be opened, exactly
(:func:`~carlos.weights.relate.exact_relation`), and orders the answer: named relationships
first, then by |cosine|. The callers supply fingerprints and files through two callables, so
this module needs no store. :func:`describe` says a match in words for reports and pages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from carlos.config import Thresholds
from carlos.core.index import DirectionIndex, Int8Kernel
from carlos.errors import InvalidInputError
from carlos.weights.canonical import ModuleSource
from carlos.weights.relate import (
    DERIVED,
    IDENTICAL,
    PARTIAL,
    RESCALED,
    SUBSET,
    UNRELATED,
    Relation,
    RelationThresholds,
    exact_relation,
    sketch_relation,
)
from carlos.weights.sketch import Fingerprint

#: |cosine| of the search vectors from which a candidate is re-ranked exactly even when its
#: sketch relation says "unrelated" (the search vector's own estimation error is ~ 1/sqrt(dim)).
EXACT_FLOOR = 0.2
_NO_FILTER = Thresholds(strength_max=None, consistency_min=None)

SourceOpener = Callable[[str], contextlib.AbstractContextManager[ModuleSource | None]]


class FingerprintIndex:
    """Cosine top-k over search vectors (rows of ``matrix``, ids in ``ids``)."""

    def __init__(self, ids: Sequence[str], matrix: np.ndarray, *, int8: Int8Kernel | None = None, kernel: str = "auto") -> None:
        self.ids = list(ids)
        if len(self.ids) != len(matrix):
            raise InvalidInputError(f"{len(self.ids)} ids for {len(matrix)} vectors")
        zeros = np.zeros(len(self.ids))
        self.index = (
            DirectionIndex(np.ascontiguousarray(matrix, dtype=np.float32), zeros, zeros, int8=int8, kernel=kernel) if self.ids else None
        )

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, vector: np.ndarray, k: int, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """(id, cosine) of the ``k`` best rows, best first, leaving out ``exclude``."""
        if self.index is None or not np.any(vector):
            return []
        skip = set(exclude)
        rows, scores, _ = self.index.search(vector, min(len(self.ids), k + len(skip)), _NO_FILTER)
        hits = [(self.ids[r], float(s)) for r, s in zip(rows, scores) if self.ids[r] not in skip]
        return hits[:k]


@dataclass(frozen=True)
class Match:
    """A stored fingerprint related to the query."""

    other_id: str
    relation: Relation
    search_cosine: float

    def to_dict(self, modules: int | None = 20) -> dict[str, Any]:
        return {"lora_id": self.other_id, "search_cosine": self.search_cosine, **self.relation.to_dict(modules)}


def _rank_key(m: Match) -> tuple[int, float]:
    return (0 if m.relation.label != UNRELATED else 1, -abs(m.relation.cosine))


def find_matches(
    query: Fingerprint,
    index: FingerprintIndex,
    fingerprints_of: Callable[[Sequence[str]], Mapping[str, Fingerprint]],
    *,
    query_source: ModuleSource | None = None,
    open_source: SourceOpener | None = None,
    top_k: int = 10,
    candidates: int | None = None,
    exclude: Iterable[str] = (),
    thresholds: RelationThresholds | None = None,
) -> list[Match]:
    """The ``top_k`` stored fingerprints most related to ``query``, named relationships first.

    ``candidates`` (default max(3·top_k, 30)) come from the index; their fingerprints are
    fetched at once (``fingerprints_of(ids)``: those it knows); each is related from the
    fingerprints and, when ``query_source`` is given and ``open_source(id)`` yields the match's
    file, exactly.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InvalidInputError(f"top_k must be a positive int, got {top_k!r}")
    thresholds = thresholds or RelationThresholds()
    found = []
    hits = index.search(query.vector, candidates or max(3 * top_k, 30), exclude)
    known = fingerprints_of([other_id for other_id, _ in hits])
    for other_id, score in hits:
        other = known.get(other_id)
        if other is None or other.spec != query.spec:
            continue
        relation = sketch_relation(query, other, thresholds)
        if query_source is not None and open_source is not None and (relation.label != UNRELATED or abs(score) >= EXACT_FLOOR):
            with open_source(other_id) as source:
                if source is not None:
                    norms_a = dict(zip(query.names, map(float, query.norms)))
                    norms_b = dict(zip(other.names, map(float, other.norms)))
                    relation = exact_relation(query_source, source, thresholds, norms_a=norms_a, norms_b=norms_b)
        found.append(Match(other_id, relation, score))
    return sorted(found, key=_rank_key)[:top_k]


def describe(
    label: str,
    kind: str | None,
    other: str,
    *,
    cosine: float,
    scale: float,
    status: str | None = None,
    by: str | None = None,
    when: Any = None,
) -> str:
    """A match in words: "same weights as X, flagged by bob on 2026-12-01" (``other`` is plain text)."""
    if label == IDENTICAL:
        text = f"same weights as {other}"
    elif label == RESCALED:
        text = f"same weights as {other}, scaled ×{scale:.3g}"
    elif label == DERIVED:
        text = f"a rank-reduced, re-quantized or further-trained copy of {other} (cosine {cosine:.3f})"
    elif label == PARTIAL and kind == SUBSET:
        text = f"shares modules with {other}"
    elif label == PARTIAL:
        text = f"partly the weights of {other}: a merge or blend (cosine {cosine:.3f})"
    else:
        text = f"unrelated to {other} (cosine {cosine:.3f})"
    if status and status != "unreviewed":
        when_text = f" on {str(when)[:10]}" if when is not None and str(when) not in ("NaT", "None") else ""
        text += f", {status}" + (f" by {by}" if by else "") + when_text
    elif status:
        text += ", not reviewed yet"
    return text
