"""Exact fast query directions: reuse each prompt's keys/values (PAPER.md, "Retrieval").

CLIP's text transformer is causal, so the hidden states of a token depend only on
the tokens before it. ``tokens(p + " " + q)`` normally starts with all of
``tokens(p)`` except its end token, so the keys/values of those positions can be
computed once per (embedder, prompt list) and a query then only runs its
``len(q) + 1`` new positions per prompt. Correctness does not rest on that BPE
claim: for every prompt the composed text is tokenized exactly as the plain path
would (truncation included) and only the *longest common prefix* with the cached
tokens is reused; whatever differs is recomputed. So the result equals
:func:`carlos.search.query.query_direction_naive` (and the authors' pad-to-longest
procedure, :func:`carlos.search.query.query_direction_shipped`) up to float rounding, always.

How a query runs (``bench query`` times it against the shipped procedure): the new
positions of all prompts form one batch, so every projection is one matrix product over
``len(prompts) x (len(q) + 1)`` rows (the MLP in blocks of rows, its activation in place:
:func:`carlos.models.text_tower.mlp`). Only attention looks at the cache:
prompts are kept sorted by length in buckets, each bucket's keys (stored transposed)
and values padded to its longest prompt, and one additive mask per bucket and query
(prefix positions before the reuse point, then causal over the new ones) serves all
layers. Nothing is concatenated to or written into the cache, so concurrent queries
may share it. The last block runs its query, output projection and MLP only for the
pooled (end-token) position, the only one the direction reads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from carlos.core.query import (
    QueryDirection,
    check_prompts,
    compose,
    hash_prompts,
    log_truncation,
    normalize_query,
)
from carlos.models.clip import ClipEmbedder, Progress
from carlos.models.text_tower import check_supported, project, run_blocks

logger = logging.getLogger(__name__)

_BUCKET = 64  # prompts per attention bucket: length-sorted, keys padded to the bucket's longest


def _first_argmax(ids: Sequence[int]) -> int:
    """Where open_clip pools ("argmax" pooling: first position of the largest id, the EOT)."""
    return int(np.argmax(np.asarray(ids)))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(frozen=True)
class _Bucket:
    start: int  # rows start:stop of the length-sorted batch
    stop: int
    keys_t: list[Any]  # per layer (B, H, head_dim, P): keys of the first P positions, transposed
    values: list[Any]  # per layer (B, H, P, head_dim)


class PrefixCache:
    """Base features and per-layer keys/values of a prompt list, for one embedder."""

    def __init__(
        self,
        embedder: ClipEmbedder,
        prompts: tuple[str, ...],
        prompts_hash: str,
        base_features: np.ndarray,
        n_base_truncated: int,
        order: np.ndarray,
        prefix_ids: tuple[tuple[int, ...], ...],
        buckets: list[_Bucket],
    ) -> None:
        self.embedder = embedder
        self.prompts = prompts
        self.prompts_hash = prompts_hash
        base_features.setflags(write=False)
        self.base_features = base_features  # (n, dim) float32: t(p), unnormalized
        self.n_base_truncated = n_base_truncated  # prompts that alone exceed the token window
        self._order = order  # row i of the sorted batch is prompt order[i]
        self._prefix_ids = prefix_ids  # per row: the prompt's full token ids (SOT ... EOT)
        self._buckets = buckets

    @property
    def embedder_id(self) -> str:
        return self.embedder.embedder_id

    @property
    def nbytes(self) -> int:
        """Memory held by the cached keys/values."""
        return sum(t.numel() * t.element_size() for b in self._buckets for t in b.keys_t + b.values)

    def __len__(self) -> int:
        return len(self.prompts)

    def __repr__(self) -> str:
        return f"PrefixCache({self.embedder_id!r}, {len(self)} prompts, {self.nbytes / 2**20:.1f} MiB)"


def build_prefix_cache(
    embedder: ClipEmbedder,
    prompts: Sequence[str],
    progress: Progress | None = None,
    *,
    prompts_hash: str | None = None,
) -> PrefixCache:
    """Encode every prompt once, keeping t(p) and the keys/values of its positions but the last."""
    import torch
    import torch.nn.functional as F

    check_supported(embedder)
    prompts = check_prompts(prompts)
    model, device = embedder.model, embedder.device
    ids = [embedder.token_ids(p) for p in prompts]
    n_trunc = sum(t for _, t in ids)
    if n_trunc:
        logger.warning(
            "%d of %d prompts alone exceed %d tokens and are truncated",
            n_trunc,
            len(prompts),
            embedder.context_length,
        )
    order = np.argsort([len(i) for i, _ in ids], kind="stable")  # similar lengths share a bucket
    seqs = [ids[r][0] for r in order]
    base = np.empty((len(prompts), embedder.dim), dtype=np.float32)
    buckets: list[_Bucket] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), _BUCKET):
            part = seqs[start : start + _BUCKET]
            length = max(len(s) for s in part)
            tokens = torch.zeros(len(part), length, dtype=torch.long)
            for b, s in enumerate(part):
                tokens[b, : len(s)] = torch.tensor(s)
            tokens = tokens.to(device)
            kept: list[tuple[Any, Any]] = []

            def attend(layer: int, q: Any, k: Any, v: Any, kept: list[tuple[Any, Any]] = kept, keep: int = length - 1) -> Any:
                # the end token (last position) is never reused: a query's own end token replaces it
                kept.append((k[:, :, :keep].transpose(-2, -1).contiguous(), v[:, :, :keep].contiguous()))
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)

            x = model.token_embedding(tokens) + model.positional_embedding[:length]
            x = run_blocks(model, x, attend)
            pool = torch.tensor([_first_argmax(s) for s in part], device=device)
            base[order[start : start + len(part)]] = project(model, x[torch.arange(len(part), device=device), pool]).float().cpu().numpy()
            buckets.append(_Bucket(start, start + len(part), [k for k, _ in kept], [v for _, v in kept]))
            if progress is not None:
                progress(min(start + _BUCKET, len(prompts)), len(prompts))
    cache = PrefixCache(
        embedder,
        tuple(prompts),
        prompts_hash if prompts_hash is not None else hash_prompts(prompts),
        base,
        n_trunc,
        order,
        tuple(tuple(s) for s in seqs),
        buckets,
    )
    logger.info("built %r", cache)
    return cache


def _masks(bucket: _Bucket, starts: Any, lens: Any, length: int) -> tuple[Any, Any]:
    """Additive attention masks of one bucket: (B, 1, L, P + L) for all new rows, and
    (B, 1, 1, P + L) for each prompt's pooled (last) row alone."""
    import torch

    s, n_lens = starts[bucket.start : bucket.stop], lens[bucket.start : bucket.stop]
    device = s.device
    past = torch.arange(bucket.values[0].shape[2], device=device)[None, None, :] < s[:, None, None]  # (B, 1, P)
    j = torch.arange(length, device=device)
    new = (j[None, None, :] <= j[None, :, None]) & (j[None, None, :] < n_lens[:, None, None])  # (B, L, L)
    ok = torch.cat([past.expand(-1, length, -1), new], dim=-1).unsqueeze(1)
    bias = torch.zeros(ok.shape, device=device).masked_fill_(~ok, float("-inf"))
    last = bias[torch.arange(len(s), device=device), :, n_lens - 1].unsqueeze(2)
    return bias, last


def _attention(buckets: list[_Bucket], masks: list[tuple[Any, Any]]) -> Any:
    """``attend`` for :func:`run_blocks`: new positions against cached and new keys, per bucket."""
    import torch

    def attend(layer: int, q: Any, k: Any, v: Any) -> Any:
        q = q * q.shape[-1] ** -0.5
        out = q.new_empty(q.shape)
        for bucket, (bias, last) in zip(buckets, masks, strict=True):
            rows = slice(bucket.start, bucket.stop)
            qb = q[rows]
            keys_t, values = bucket.keys_t[layer], bucket.values[layer]
            scores = torch.cat([qb @ keys_t, qb @ k[rows].transpose(-2, -1)], dim=-1)
            scores += bias if q.shape[2] == k.shape[2] else last
            weights = scores.softmax(dim=-1)
            n_past = keys_t.shape[-1]
            out[rows] = weights[..., :n_past] @ values + weights[..., n_past:] @ v[rows]
        return out

    return attend


def query_direction_cached(cache: PrefixCache, query: str) -> QueryDirection:
    """The query direction of :func:`carlos.search.query.query_direction_naive`, via the prefix cache."""
    import torch

    q = normalize_query(query)
    embedder = cache.embedder
    model, device, ctx = embedder.model, embedder.device, embedder.context_length
    n = len(cache.prompts)
    news: list[list[int]] = []
    starts = np.empty(n, dtype=np.int64)
    unchanged = np.zeros(n, dtype=bool)
    n_truncated = n_reencoded = 0
    for i, (r, prefix) in enumerate(zip(cache._order, cache._prefix_ids, strict=True)):
        ids, truncated = embedder.token_ids(compose(cache.prompts[r], q))
        n_truncated += truncated
        unchanged[i] = tuple(ids) == prefix  # the prompt alone fills the window: t(p + q) == t(p)
        pool = _first_argmax(ids)
        # reused positions are < lcp <= len(prefix) - 1: the cache holds all but the end token
        lcp = min(_common_prefix(ids, prefix), pool)  # the pooled position is always new
        if not unchanged[i] and lcp < min(len(prefix) - 1, pool):  # the BPE claim failed here
            n_reencoded += 1
        news.append(ids[lcp : pool + 1])
        starts[i] = lcp
    lens = np.array([len(t) for t in news], dtype=np.int64)
    length = int(lens.max())
    tokens = np.zeros((n, length), dtype=np.int64)
    for i, new in enumerate(news):
        tokens[i, : len(new)] = new
    positions = np.minimum(starts[:, None] + np.arange(length)[None, :], ctx - 1)  # pads: clamp
    with torch.inference_mode():
        starts_t, lens_t = torch.from_numpy(starts).to(device), torch.from_numpy(lens).to(device)
        masks = [_masks(b, starts_t, lens_t, length) for b in cache._buckets]
        x = model.token_embedding(torch.from_numpy(tokens).to(device))
        x = x + model.positional_embedding[torch.from_numpy(positions).to(device)]
        x = run_blocks(model, x, _attention(cache._buckets, masks), last_rows=lens_t - 1)
        feats = project(model, x[:, 0]).float().cpu().numpy()
    composed_feats = np.empty_like(cache.base_features)
    composed_feats[cache._order] = feats
    composed_feats[cache._order[unchanged]] = cache.base_features[cache._order[unchanged]]
    diffs = composed_feats.astype(np.float64) - cache.base_features.astype(np.float64)
    log_truncation(q, n_truncated, n, ctx)
    if n_reencoded:
        logger.info("query %r: %d of %d prompts re-encoded past a tokenization change", q[:80], n_reencoded, n)
    return QueryDirection(
        query=q,
        direction=diffs.mean(axis=0).astype(np.float32),
        n_prompts=n,
        n_truncated=int(n_truncated),
        query_tokens=len(embedder.bpe_ids(q)),
        embedder_id=embedder.embedder_id,
        prompts_hash=cache.prompts_hash,
        method="kv-cache",
        n_reencoded=n_reencoded,
    )
