"""CLIP's text tower run piece by piece: pad-to-longest encoding and the blocks the KV cache runs.

open_clip's ``encode_text`` always reads the full 77-token window (positional embeddings and the
causal mask are added at full size). The authors' shipped query procedure (PAPER.md, "Query
direction as shipped") pads each batch only to its longest text instead; for a causal tower
pooled at the end token that gives the same features, because no real position ever attends to
padding. :func:`text_features_longest` does exactly that with open_clip's own transformer: the
token tensor is cut to the longest row, the mask and the positional embeddings are sliced to
that length. :mod:`carlos.models.prefix_cache` uses :func:`check_supported`, :func:`run_blocks`
and :func:`project` to run only new positions against cached keys/values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from carlos.errors import InvalidInputError
from carlos.models.clip import ClipEmbedder


def is_causal(model: Any) -> bool:
    """True when the text tower's attention mask is the causal (upper-triangular -inf) one."""
    import torch

    mask = getattr(model, "attn_mask", None)
    if mask is None:
        return False
    upper = torch.ones_like(mask, dtype=torch.bool).triu(1)
    return bool(torch.equal(torch.isinf(mask).cpu(), upper.cpu()))


def check_supported(embedder: ClipEmbedder) -> None:
    """Refuse text towers this module does not mirror exactly (so no silent wrong answer)."""
    import torch.nn as nn
    from open_clip.transformer import ResidualAttentionBlock

    model = embedder.model
    problems = []
    if not hasattr(model, "token_embedding") or not hasattr(model, "transformer"):
        problems.append("not an open_clip CLIP with a built-in text transformer")
    else:
        if not is_causal(model):
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


def project(model: Any, pooled: Any) -> Any:
    """ln_final then the text projection, as open_clip's encode_text does after pooling."""
    import torch.nn as nn

    x = model.ln_final(pooled)
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def text_features_longest(embedder: ClipEmbedder, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
    """Projected, unnormalized text features with each batch padded to its longest text.

    ``batch_size=None`` encodes all texts as one batch (what the shipped procedure does with
    each prompt list). Equal to :meth:`ClipEmbedder.text_features` (77-padded) up to float
    rounding for causal towers pooled at the end token; any other tower is run at full length.
    """
    return tokens_features_longest(embedder, embedder.tokenize(texts)[0], batch_size)


def tokens_features_longest(embedder: ClipEmbedder, tokens_np: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """:func:`text_features_longest` of texts already tokenized by :meth:`ClipEmbedder.tokenize`."""
    import torch
    from open_clip.transformer import text_global_pool

    model = embedder.model
    n = len(tokens_np)
    if n == 0:
        return np.empty((0, embedder.dim), dtype=np.float32)
    step = n if batch_size is None else batch_size
    if step < 1:
        raise InvalidInputError(f"batch_size must be positive, got {batch_size!r}")
    sliceable = is_causal(model) and getattr(model, "text_pool_type", None) in ("argmax", "eos")
    out = np.empty((n, embedder.dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, step):
            chunk = tokens_np[start : start + step]
            # the last column any row uses (id 0 is a real token, "!", so count columns, not ids)
            length = int(np.flatnonzero(chunk.any(axis=0)).max()) + 1 if sliceable else chunk.shape[1]
            text = torch.from_numpy(np.ascontiguousarray(chunk[:, :length])).to(embedder.device)
            cast = model.transformer.get_cast_dtype()
            x = model.token_embedding(text).to(cast) + model.positional_embedding[:length].to(cast)
            mask = model.attn_mask
            x = model.transformer(x, attn_mask=None if mask is None else mask[:length, :length])
            x = model.ln_final(x)
            x = text_global_pool(x, text, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
            proj = model.text_projection
            if proj is not None:
                x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
            out[start : start + len(chunk)] = x.float().cpu().numpy()
    return out


_MLP_ROWS = 512  # rows per MLP block: the (rows, 4 x width) activation stays in the CPU caches


def mlp(blk: Any, x: Any) -> Any:
    """``blk.mlp(x)``, computed in blocks of rows with the activation applied in place.

    The same function as open_clip's ``c_fc -> QuickGELU/GELU -> c_proj`` (QuickGELU
    ``h * sigmoid(1.702 h)`` as ``silu(1.702 h) / 1.702``, equal up to float rounding), with
    less memory traffic; any other MLP is called as it is. Inference only (in-place activation).
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from open_clip.transformer import QuickGELU

    seq = blk.mlp
    act = getattr(seq, "gelu", None)
    mirrored = isinstance(seq, nn.Sequential) and len(seq) == 3 and hasattr(seq, "c_fc") and hasattr(seq, "c_proj")
    if not (mirrored and isinstance(act, (QuickGELU, nn.GELU))):
        return seq(x)
    fc, proj = seq.c_fc, seq.c_proj
    flat = x.reshape(-1, x.shape[-1])
    out = flat.new_empty(flat.shape[0], proj.out_features)
    for start in range(0, flat.shape[0], _MLP_ROWS):
        h = F.linear(flat[start : start + _MLP_ROWS], fc.weight, fc.bias)
        if isinstance(act, QuickGELU):
            F.silu(h.mul_(1.702), inplace=True).div_(1.702)
        else:
            h = F.gelu(h, approximate=act.approximate)
        rows = out[start : start + _MLP_ROWS]
        torch.mm(h, proj.weight.t(), out=rows) if proj.bias is None else torch.addmm(proj.bias, h, proj.weight.t(), out=rows)
    return out.view(*x.shape[:-1], proj.out_features)


def run_blocks(model: Any, x: Any, attend: Any, last_rows: Any | None = None) -> Any:
    """The text blocks on the residual stream ``x`` (B, L, width) of new positions.

    ``attend(layer, q, k, v)`` gets the new positions' heads, (B, H, Lq, hd) and (B, H, L, hd),
    and returns the attention output (B, H, Lq, hd). With ``last_rows`` (B,) the last block
    runs its query, output projection and MLP only for row ``last_rows[b]`` of each item (the
    pooled position: nothing else of the last block is read), and (B, 1, width) is returned.
    """
    import torch
    import torch.nn.functional as F

    batch, length, width = x.shape
    blocks = list(model.transformer.resblocks)
    for layer, blk in enumerate(blocks):
        attn = blk.attn
        heads = attn.num_heads
        head_dim = width // heads
        h = blk.ln_1(x)
        if last_rows is not None and layer == len(blocks) - 1:
            w, b = attn.in_proj_weight, attn.in_proj_bias
            kv = F.linear(h, w[width:], None if b is None else b[width:])
            k, v = (t.view(batch, length, heads, head_dim).transpose(1, 2) for t in kv.chunk(2, -1))
            rows = torch.arange(batch, device=x.device)
            x = x[rows, last_rows].unsqueeze(1)
            q = F.linear(h[rows, last_rows].unsqueeze(1), w[:width], None if b is None else b[:width])
            q = q.view(batch, 1, heads, head_dim).transpose(1, 2)
        else:
            qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)
            q, k, v = (t.view(batch, length, heads, head_dim).transpose(1, 2) for t in qkv.chunk(3, -1))
        out = attend(layer, q, k, v)
        out = attn.out_proj(out.transpose(1, 2).reshape(batch, q.shape[2], width))
        x = x + blk.ls_1(out)
        x = x + blk.ls_2(mlp(blk, blk.ln_2(x)))
    return x
