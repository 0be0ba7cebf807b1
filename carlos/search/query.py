"""The paper's query direction computed in full: the reference every faster path must equal.

``dq = mean over p' of [t(p' + " " + q) - t(p')]`` (PAPER.md, "Retrieval"), encoding all
``2 * len(prompts)`` texts; :mod:`carlos.models.prefix_cache` computes the same direction
from cached prompt prefixes, and its tests compare with this function.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from carlos.core.query import QueryDirection, check_prompts, compose, hash_prompts, log_truncation, normalize_query
from carlos.models.clip import ClipEmbedder, Progress


def query_direction_naive(
    embedder: ClipEmbedder,
    prompts: Sequence[str],
    query: str,
    *,
    prompts_hash: str | None = None,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> QueryDirection:
    """Reference query direction: encode all ``2 * len(prompts)`` texts in full.

    ``prompts_hash`` identifies the prompt list in the result (defaults to
    :func:`hash_prompts`). Progress counts encoded texts.
    """
    q = normalize_query(query)
    prompts = check_prompts(prompts)
    composed = [compose(p, q) for p in prompts]
    _, truncated = embedder.tokenize(composed)
    feats = embedder.text_features(prompts + composed, batch_size=batch_size, progress=progress)
    n = len(prompts)
    diffs = feats[n:].astype(np.float64) - feats[:n].astype(np.float64)
    n_truncated = int(truncated.sum())
    log_truncation(q, n_truncated, n, embedder.context_length)
    return QueryDirection(
        query=q,
        direction=diffs.mean(axis=0).astype(np.float32),
        n_prompts=n,
        n_truncated=n_truncated,
        query_tokens=len(embedder.bpe_ids(q)),
        embedder_id=embedder.embedder_id,
        prompts_hash=prompts_hash if prompts_hash is not None else hash_prompts(prompts),
        method="naive",
    )
