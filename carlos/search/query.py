"""The paper's query direction computed in full: the references every faster path must equal.

``dq = mean over p' of [t(p' + " " + q) - t(p')]`` (PAPER.md, "Retrieval"), encoding all
``2 * len(prompts)`` texts. Two ways, equal up to float rounding:

* :func:`query_direction_shipped`: the authors' procedure as released (PAPER.md, "Query
  direction as shipped"): the prompts and the composed texts as two batches, each padded to
  its longest text (:func:`carlos.models.text_tower.text_features_longest`);
* :func:`query_direction_naive`: every text padded to the full 77-token window, in batches.

:mod:`carlos.models.prefix_cache` computes the same direction from cached prompt prefixes, and
its tests and ``bench query`` compare it with both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from carlos.core.query import QueryDirection, check_prompts, compose, hash_prompts, log_truncation, normalize_query
from carlos.models.clip import ClipEmbedder, Progress
from carlos.models.text_tower import tokens_features_longest


def _direction(
    embedder: ClipEmbedder,
    prompts: Sequence[str],
    query: str,
    prompts_hash: str | None,
    encode: Callable[[list[str], list[str]], tuple[np.ndarray, np.ndarray, int]],
) -> QueryDirection:
    q = normalize_query(query)
    prompts = check_prompts(prompts)
    base, with_q, n_truncated = encode(prompts, [compose(p, q) for p in prompts])
    n = len(prompts)
    diffs = with_q.astype(np.float64) - base.astype(np.float64)
    log_truncation(q, n_truncated, n, embedder.context_length)
    return QueryDirection(
        query=q,
        direction=diffs.mean(axis=0).astype(np.float32),
        n_prompts=n,
        n_truncated=int(n_truncated),
        query_tokens=len(embedder.bpe_ids(q)),
        embedder_id=embedder.embedder_id,
        prompts_hash=prompts_hash if prompts_hash is not None else hash_prompts(prompts),
        method="naive",
    )


def query_direction_naive(
    embedder: ClipEmbedder,
    prompts: Sequence[str],
    query: str,
    *,
    prompts_hash: str | None = None,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> QueryDirection:
    """Reference query direction: encode all ``2 * len(prompts)`` texts in full, padded to 77.

    ``prompts_hash`` identifies the prompt list in the result (defaults to
    :func:`hash_prompts`). Progress counts encoded texts.
    """

    def encode(prompts: list[str], composed: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
        _, truncated = embedder.tokenize(composed)
        feats = embedder.text_features(prompts + composed, batch_size=batch_size, progress=progress)
        return feats[: len(prompts)], feats[len(prompts) :], int(truncated.sum())

    return _direction(embedder, prompts, query, prompts_hash, encode)


def query_direction_shipped(
    embedder: ClipEmbedder,
    prompts: Sequence[str],
    query: str,
    *,
    prompts_hash: str | None = None,
) -> QueryDirection:
    """The authors' released procedure: the prompts, then the ``p + " " + q`` texts, each
    list encoded as one batch padded to its longest text (``padding=True`` of the
    transformers processor). Same value as :func:`query_direction_naive`, less padding."""

    def encode(prompts: list[str], composed: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
        base = tokens_features_longest(embedder, embedder.tokenize(prompts)[0])
        tokens, truncated = embedder.tokenize(composed)  # each text tokenized once, as the processor does
        return base, tokens_features_longest(embedder, tokens), int(truncated.sum())

    return _direction(embedder, prompts, query, prompts_hash, encode)
