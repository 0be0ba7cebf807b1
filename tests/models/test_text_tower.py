"""The text tower run piece by piece: pad-to-longest features and the blocked MLP equal open_clip's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carlos.models import text_tower
from carlos.models.clip import load_clip
from carlos.models.text_tower import is_causal, mlp, text_features_longest

# "!" is BPE id 0, the padding id: lengths must come from the columns used, not from non-zero ids
TEXTS = ["a photo of a cat!!", "Ein Hund im Schnee", "东京的夜景 🌃", "wow! ! !", "a b c " * 40, "x"]


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def tiny():
    return load_clip("tiny", device="cpu")


def _context_lengths(model, fn):
    """Run ``fn`` and return the sequence lengths the text transformer was called with."""
    seen: list[int] = []
    handle = model.transformer.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(args[0].shape[1]), with_kwargs=True)
    try:
        out = fn()
    finally:
        handle.remove()
    return out, seen


@pytest.mark.parametrize("name", ["tiny", "ViT-B-32/random"])
def test_pad_to_longest_equals_77_padded(name, tiny):
    emb = tiny if name == "tiny" else load_clip(name, device="cpu")
    full = emb.text_features(TEXTS)
    longest = [max(len(emb.token_ids(t)[0]) for t in part) for part in (TEXTS[:4], TEXTS)]
    short, seen = _context_lengths(emb.model, lambda: text_features_longest(emb, TEXTS[:4]))
    assert seen == [longest[0]] and longest[0] < 20  # one batch, cut to its longest text
    assert rel(short, full[:4]) <= 1e-5
    batched, seen = _context_lengths(emb.model, lambda: text_features_longest(emb, TEXTS, batch_size=4))
    assert seen == [longest[0], 77]  # the second batch holds the truncated text: full window
    assert rel(batched, full) <= 1e-5 and batched.dtype == np.float32


def test_non_causal_towers_are_encoded_at_full_length():
    emb = load_clip("tiny", device="cpu")
    emb.model.attn_mask = None  # bidirectional: padding would change every feature
    assert not is_causal(emb.model)
    feats, seen = _context_lengths(emb.model, lambda: text_features_longest(emb, TEXTS[:2]))
    assert seen == [77]
    with torch.inference_mode():
        ref = emb.model.encode_text(torch.from_numpy(emb.tokenize(TEXTS[:2])[0])).numpy()
    assert rel(feats, ref) <= 1e-6


@pytest.mark.parametrize("act", ["quick_gelu", "gelu", "gelu_tanh"])
def test_blocked_mlp_equals_the_module(tiny, monkeypatch, act):
    blk = load_clip("tiny", device="cpu").model.transformer.resblocks[0]
    if act != "quick_gelu":
        blk.mlp.gelu = torch.nn.GELU(approximate="tanh" if act == "gelu_tanh" else "none")
    monkeypatch.setattr(text_tower, "_MLP_ROWS", 7)  # several blocks and a remainder
    x = torch.randn(5, 9, blk.mlp.c_fc.in_features)
    with torch.inference_mode():
        ref = blk.mlp(x)
        np.testing.assert_allclose(mlp(blk, x).numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)
        blk.mlp.c_proj.bias = None
        np.testing.assert_allclose(mlp(blk, x).numpy(), blk.mlp(x).numpy(), rtol=1e-5, atol=1e-6)
        blk.mlp.gelu = torch.nn.ReLU()  # not mirrored: the module itself runs
        assert torch.equal(mlp(blk, x), blk.mlp(x))
