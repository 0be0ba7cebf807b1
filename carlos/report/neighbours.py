"""The two "behaves like" sections of a case file: by behaviour (Direction cosine in the
representation's space, the search path's :func:`carlos.core.ranking.similar` over the serving
view) and by weights (the weight-space matches recorded with the LoRA file's fingerprint)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from carlos.config import Thresholds
from carlos.core import ranking
from carlos.report.case import Neighbour, Neighbours
from carlos.search.views import corpus_view

if TYPE_CHECKING:
    from carlos.store.store import Store

WEIGHTS_UNAVAILABLE = "weight fingerprint not available"


def by_behaviour(store: Store, lora_id: str, embedder: str | None, thresholds: Thresholds, top_k: int) -> Neighbours:
    """The ``top_k`` LoRAs whose Directions are nearest (cosine) under the thresholds in force,
    and how many the thresholds removed."""
    if embedder is None:
        return Neighbours("behaviour", False, "not characterized: no Direction to compare", None, 0, [])
    view = corpus_view(store, embedder)
    res = ranking.similar(view, lora_id, thresholds=thresholds, top_k=top_k)
    hits = [
        Neighbour(
            h.rank, h.lora_id, h.name, float(h.score), float(h.strength), float(h.consistency), list(h.excluded_because), list(h.flags)
        )
        for h in res.hits
    ]
    message = (
        f"the {len(hits)} nearest by Direction cosine in the {embedder} space, of {res.n_candidates} LoRAs; "
        f"the thresholds in force removed {res.n_excluded}"
    )
    return Neighbours("behaviour", True, message, embedder, int(res.n_excluded), hits)


def by_weights(store: Store, lora_id: str, top_k: int) -> Neighbours:
    """The weight-space relatives recorded for this LoRA's file (``store.fingerprints``: the
    fingerprint of :mod:`carlos.weights.sketch` and the matches found with it), named
    relations (identical, rescaled, derived, partial) first; or why there are none."""
    from carlos.weights.match import describe
    from carlos.weights.relate import UNRELATED

    fp = store.fingerprints.get(lora_id)
    if fp is None:
        return Neighbours("weights", False, f"{WEIGHTS_UNAVAILABLE}: this LoRA's file has not been fingerprinted", None, 0, [])
    rows = store.fingerprints.matches(lora_id)
    rows.sort(key=lambda r: (r["label"] == UNRELATED, -abs(float(r["cosine"]))))
    hits = []
    for rank, r in enumerate(rows[:top_k], start=1):
        other = str(r.get("other_name") or r["other_id"])
        words = describe(r["label"], r.get("kind"), other, cosine=float(r["cosine"]), scale=float(r.get("scale") or 1.0))
        hits.append(
            Neighbour(
                rank,
                str(r["other_id"]),
                other,
                float(r["cosine"]),
                None,
                None,
                [],
                [words + (" (exact)" if r.get("exact") else " (from the fingerprints)")],
            )
        )
    n = store.fingerprints.count(fp["spec"])
    message = f"the {len(hits)} strongest of {len(rows)} recorded weight-space matches, among {n} fingerprints ({fp['spec']})"
    return Neighbours("weights", True, message, str(fp["spec"]), 0, hits)
