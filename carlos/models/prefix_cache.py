"""Exact fast query directions: reuse each prompt's keys/values (PAPER.md, "Retrieval").

CLIP's text transformer is causal, so the hidden states of a token depend only on
the tokens before it. ``tokens(p + " " + q)`` normally starts with all of
``tokens(p)`` except its end token, so the keys/values of those positions can be
computed once per (embedder, prompt list) and a query then only runs its
``len(q) + 1`` new positions per prompt. Correctness does not rest on that BPE
claim: for every prompt the composed text is tokenized exactly as the plain path
would (truncation included) and only the *longest common prefix* with the cached
tokens is reused; whatever differs is recomputed. So the result equals
:func:`carlos.search.query.query_direction_naive` up to float rounding, always.
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
from carlos.errors import InvalidInputError
from carlos.models.clip import ClipEmbedder, Progress

logger = logging.getLogger(__name__)

_CHUNK = 64  # prompts per batched forward


def _first_argmax(ids: Sequence[int]) -> int:
    """Where open_clip pools ("argmax" pooling: first position of the largest id, the EOT)."""
    return int(np.argmax(np.asarray(ids)))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def check_supported(embedder: ClipEmbedder) -> None:
    """Refuse text towers this module does not mirror exactly (so no silent wrong answer)."""
    import torch
    import torch.nn as nn
    from open_clip.transformer import ResidualAttentionBlock

    model = embedder.model
    problems = []
    if not hasattr(model, "token_embedding") or not hasattr(model, "transformer"):
        problems.append("not an open_clip CLIP with a built-in text transformer")
    else:
        mask = getattr(model, "attn_mask", None)
        if mask is None or not torch.equal(torch.isinf(mask).cpu(), torch.ones_like(mask, dtype=torch.bool).cpu().triu(1)):
            problems.append("text attention is not causal")
        if getattr(model, "text_pool_type", None) != "argmax":
            problems.append(f"pooling {getattr(model, 'text_pool_type', None)!r} is not 'argmax'")
        for blk in model.transformer.resblocks:
            if (
                type(blk) is not ResidualAttentionBlock
                or hasattr(blk, "ln_1_kv")
                or not isinstance(blk.attn, nn.MultiheadAttention)
                or not blk.attn._qkv_same_embed_dim
            ):
                problems.append(f"unsupported block {type(blk).__name__}")
                break
    if problems:
        raise InvalidInputError(
            f"the KV cache cannot serve {embedder.embedder_id}: {'; '.join(problems)}; "
            "use carlos.search.query.query_direction_naive instead"
        )


def _forward(model: Any, tokens: Any, positions: Any, mask: Any, past: list[tuple[Any, Any]] | None) -> tuple[Any, list[tuple[Any, Any]]]:
    """Run new positions through the text blocks; returns the residual stream and new keys/values.

    ``tokens``/``positions``: (B, L) long; ``mask``: (B, 1, L, P + L) bool, True = may attend;
    ``past``: per layer (keys, values) of shape (B, H, P, head_dim), or None when P = 0.
    """
    import torch
    import torch.nn.functional as F

    x = model.token_embedding(tokens) + model.positional_embedding[positions]
    batch, length, width = x.shape
    new_kv = []
    for layer, blk in enumerate(model.transformer.resblocks):
        attn = blk.attn
        heads = attn.num_heads
        qkv = F.linear(blk.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = (t.view(batch, length, heads, width // heads).transpose(1, 2) for t in qkv.chunk(3, -1))
        new_kv.append((k, v))
        if past is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:  # attend to cached and new keys without copying the cache (torch.cat per layer)
            past_k, past_v = past[layer]
            scale = q.shape[-1] ** -0.5
            scores = torch.cat([q @ past_k.transpose(-2, -1), q @ k.transpose(-2, -1)], dim=-1) * scale
            weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            n_past = past_k.shape[2]
            out = weights[..., :n_past] @ past_v + weights[..., n_past:] @ v
        out = attn.out_proj(out.transpose(1, 2).reshape(batch, length, width))
        x = x + blk.ls_1(out)
        x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
    return x, new_kv


def _project(model: Any, pooled: Any) -> Any:
    """ln_final then the text projection, as open_clip's encode_text does after pooling."""
    import torch.nn as nn

    x = model.ln_final(pooled)
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


@dataclass(frozen=True)
class _Chunk:
    rows: np.ndarray  # indices of these prompts in the prompt list
    prefix_ids: tuple[tuple[int, ...], ...]  # each prompt's full token ids (SOT ... EOT)
    past: list[tuple[Any, Any]]  # per layer (keys, values): (B, H, P, head_dim) torch tensors


class PrefixCache:
    """Base features and per-layer keys/values of a prompt list, for one embedder."""

    def __init__(
        self,
        embedder: ClipEmbedder,
        prompts: tuple[str, ...],
        prompts_hash: str,
        base_features: np.ndarray,
        n_base_truncated: int,
        chunks: list[_Chunk],
    ) -> None:
        self.embedder = embedder
        self.prompts = prompts
        self.prompts_hash = prompts_hash
        base_features.setflags(write=False)
        self.base_features = base_features  # (n, dim) float32: t(p), unnormalized
        self.n_base_truncated = n_base_truncated  # prompts that alone exceed the token window
        self._chunks = chunks

    @property
    def embedder_id(self) -> str:
        return self.embedder.embedder_id

    @property
    def nbytes(self) -> int:
        """Memory held by the cached keys/values."""
        return sum(t.numel() * t.element_size() for c in self._chunks for kv in c.past for t in kv)

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
    """Encode every prompt once, keeping t(p) and the keys/values of all its positions."""
    import torch

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
    order = np.argsort([len(i) for i, _ in ids], kind="stable")  # similar lengths share a chunk
    base = np.empty((len(prompts), embedder.dim), dtype=np.float32)
    chunks: list[_Chunk] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), _CHUNK):
            rows = order[start : start + _CHUNK]
            seqs = [ids[r][0] for r in rows]
            length = max(len(s) for s in seqs)
            tokens = torch.zeros(len(rows), length, dtype=torch.long)
            for b, s in enumerate(seqs):
                tokens[b, : len(s)] = torch.tensor(s)
            positions = torch.arange(length).expand(len(rows), length)
            causal = torch.ones(length, length, dtype=torch.bool).tril()
            mask = causal.expand(len(rows), 1, length, length)
            x, kv = _forward(model, tokens.to(device), positions.to(device), mask.to(device), None)
            pool = torch.tensor([_first_argmax(s) for s in seqs], device=device)
            feats = _project(model, x[torch.arange(len(rows), device=device), pool])
            base[rows] = feats.float().cpu().numpy()
            chunks.append(
                _Chunk(
                    rows=rows,
                    prefix_ids=tuple(tuple(s) for s in seqs),
                    past=[(k.contiguous(), v.contiguous()) for k, v in kv],
                )
            )
            if progress is not None:
                progress(min(start + _CHUNK, len(prompts)), len(prompts))
    cache = PrefixCache(
        embedder,
        tuple(prompts),
        prompts_hash if prompts_hash is not None else hash_prompts(prompts),
        base,
        n_trunc,
        chunks,
    )
    logger.info("built %r", cache)
    return cache


def _run_chunk(model: Any, chunk: _Chunk, sel: list[int], news: list[list[int]], starts: list[int], device: str, ctx: int) -> Any:
    """Features of the composed texts of prompts ``sel`` (positions in the chunk): only the
    ``news[i]`` tokens from position ``starts[i]`` on run; earlier positions come from the cache."""
    import torch

    batch, past_len = len(sel), chunk.past[0][0].shape[2]
    length = max(len(n) for n in news)
    tokens = torch.zeros(batch, length, dtype=torch.long)
    positions = torch.zeros(batch, length, dtype=torch.long)
    mask = torch.zeros(batch, 1, length, past_len + length, dtype=torch.bool)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    for b, (new, start) in enumerate(zip(news, starts, strict=True)):
        tokens[b, : len(new)] = torch.tensor(new)
        positions[b] = torch.clamp(torch.arange(start, start + length), max=ctx - 1)  # pads: clamp
        mask[b, 0, :, :start] = True  # reused prefix positions
        mask[b, 0, :, past_len:] = causal  # the new positions, causally (pads are never attended)
    past = chunk.past
    if batch < len(chunk.rows):
        index = torch.tensor(sel, device=device)
        past = [(k.index_select(0, index), v.index_select(0, index)) for k, v in past]
    x, _ = _forward(model, tokens.to(device), positions.to(device), mask.to(device), past)
    last = torch.tensor([len(n) - 1 for n in news], device=device)
    return _project(model, x[torch.arange(batch, device=device), last])


def query_direction_cached(cache: PrefixCache, query: str) -> QueryDirection:
    """The query direction of :func:`carlos.search.query.query_direction_naive`, via the prefix cache."""
    import torch

    q = normalize_query(query)
    embedder = cache.embedder
    model, device, ctx = embedder.model, embedder.device, embedder.context_length
    composed_feats = cache.base_features.copy()  # a prompt the query cannot change keeps t(p)
    n_truncated = n_reencoded = 0
    with torch.inference_mode():
        for chunk in cache._chunks:
            sel, news, starts = [], [], []
            for b, (r, prefix) in enumerate(zip(chunk.rows, chunk.prefix_ids, strict=True)):
                ids, truncated = embedder.token_ids(compose(cache.prompts[r], q))
                n_truncated += truncated
                if tuple(ids) == prefix:  # the prompt alone fills the window: t(p + q) == t(p)
                    continue
                pool = _first_argmax(ids)
                lcp = min(_common_prefix(ids, prefix), pool)  # the pooled position is always new
                if lcp < min(len(prefix) - 1, pool):  # the BPE claim failed for this prompt
                    n_reencoded += 1
                sel.append(b)
                news.append(ids[lcp : pool + 1])
                starts.append(lcp)
            if sel:
                feats = _run_chunk(model, chunk, sel, news, starts, device, ctx)
                composed_feats[chunk.rows[sel]] = feats.float().cpu().numpy()
    n = len(cache.prompts)
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
