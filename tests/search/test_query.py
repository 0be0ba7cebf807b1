"""Query directions: validation, the plain reference, and the exact KV-cache fast path."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from carlos.core.query import (
    MAX_QUERY_CHARS,
    QueryDirection,
    check_prompts,
    hash_prompts,
    normalize_query,
)
from carlos.errors import InvalidInputError
from carlos.models import prefix_cache, text_tower
from carlos.models.clip import load_clip
from carlos.models.prefix_cache import build_prefix_cache, query_direction_cached
from carlos.search.query import query_direction_naive, query_direction_shipped

# Stand-in prompts (the real set lives in carlos/prompts.py; these tests must not depend on it).
PROMPTS = [
    "a woman with short silver hair looking at the viewer",
    "a lighthouse on a rocky coast at dusk",
    "a bowl of ramen with a soft boiled egg",
    "a vintage motorcycle parked in a narrow street",
    "logo of a fox made of simple geometric shapes",
    "a golden retriever running through autumn leaves",
    "an astronaut floating above a glowing blue planet",
    "close-up of a red dress with lace sleeves",
]
LONG_QUERY = "in an intricate baroque style with gilded ornaments and " * 9  # 81 tokens: always cut
TRICKY_QUERIES = [
    "watercolor",
    "in the style of Van Gogh, soft pastel colors!",
    "🐱🎨✨ kawaii",
    "东京的夜景, 赛博朋克",
    "Ölgemälde im Stil von Caspar David Friedrich",
    "SELECT * FROM loras; DROP TABLE loras;--",
    ",leading punctuation...",
    "'s own style",
    "#hashtag @user 3.14 100% <b>bold</b> &amp; more",
    "naïve café façade — “quoted”",
    "👨‍👩‍👧 family emoji (ZWJ)",
    LONG_QUERY,
]


def assert_same_direction(a: QueryDirection, b: QueryDirection) -> None:
    x, y = a.direction.astype(np.float64), b.direction.astype(np.float64)
    cos = x @ y / (np.linalg.norm(x) * np.linalg.norm(y))
    assert cos >= 0.99999, cos
    assert np.linalg.norm(x - y) <= 1e-5 * np.linalg.norm(y)
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5 * np.abs(y).max())
    assert (a.query, a.n_prompts, a.n_truncated, a.query_tokens, a.embedder_id, a.prompts_hash) == (
        b.query,
        b.n_prompts,
        b.n_truncated,
        b.query_tokens,
        b.embedder_id,
        b.prompts_hash,
    )


@pytest.fixture(scope="module")
def tiny():
    return load_clip("tiny", device="cpu")


@pytest.fixture(scope="module")
def tiny_cache(tiny):
    return build_prefix_cache(tiny, PROMPTS, prompts_hash="stand-in")


# ---------------------------------------------------------------- normalize_query


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  oil   painting \n", "oil painting"),
        ("neon\tcity\r\nnight", "neon city night"),
        ("bell\x07 sound\x00\x1b[0m", "bell sound[0m"),
        ("東京 🌃", "東京 🌃"),
        ("cafe\u0301", "café"),  # NFC
        ("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧"),  # zero-width joiners are kept
        ("cat <end_of_text> dog <START_OF_TEXT>", "cat dog"),
    ],
)
def test_normalize_query(raw, expected):
    assert normalize_query(raw) == expected


@pytest.mark.parametrize("bad", ["", "   ", "\n\t", "\x00\x01", "<end_of_text>", None, 42, ["a"]])
def test_normalize_query_rejects_empty_and_non_strings(bad):
    with pytest.raises(InvalidInputError):
        normalize_query(bad)


def test_normalize_query_caps_length():
    assert normalize_query("a" * MAX_QUERY_CHARS) == "a" * MAX_QUERY_CHARS
    with pytest.raises(InvalidInputError, match="at most 2,000"):
        normalize_query("a" * (MAX_QUERY_CHARS + 1))
    with pytest.raises(InvalidInputError, match="at most 2,000"):
        normalize_query(" " * 10_000_000)


def test_check_prompts():
    assert check_prompts(("a", "b")) == ["a", "b"]
    for bad in ([], "one string", ["ok", ""], ["ok", None]):
        with pytest.raises(InvalidInputError):
            check_prompts(bad)


def test_query_direction_is_frozen_and_read_only():
    qd = QueryDirection("q", np.ones(4, np.float64), 1, 0, 1, "e", "h", "naive")
    assert qd.direction.dtype == np.float32 and not qd.direction.flags.writeable
    with pytest.raises(dataclasses.FrozenInstanceError):
        qd.query = "other"
    with pytest.raises(InvalidInputError, match="method"):
        QueryDirection("q", np.ones(4), 1, 0, 1, "e", "h", "magic")


# ---------------------------------------------------------------- naive reference


def test_naive_is_mean_of_suffix_differences(tiny):
    q = "  pixel   art "
    qd = query_direction_naive(tiny, PROMPTS[:3], q, prompts_hash="h1")
    with_q = tiny.text_features([p + " pixel art" for p in PROMPTS[:3]])
    without = tiny.text_features(PROMPTS[:3])
    np.testing.assert_allclose(qd.direction, (with_q - without).mean(0), rtol=1e-5, atol=1e-6)
    assert qd.query == "pixel art" and qd.method == "naive" and qd.prompts_hash == "h1"
    assert (qd.n_prompts, qd.n_truncated, qd.query_tokens) == (3, 0, 2)
    assert qd.embedder_id == "tiny-clip/seed0" and qd.direction.shape == (tiny.dim,)
    assert query_direction_naive(tiny, PROMPTS[:3], q).prompts_hash == hash_prompts(PROMPTS[:3])
    assert hash_prompts(PROMPTS[:3]) != hash_prompts(PROMPTS[:2])


@pytest.mark.parametrize("name", ["tiny", "ViT-B-32/random"])
def test_shipped_pad_to_longest_equals_77_padded(name, tiny):
    """The authors' procedure (two batches, each padded to its longest text) == every text padded to 77."""
    emb = tiny if name == "tiny" else load_clip(name, device="cpu")
    prompts = [*PROMPTS, "word " * 74]  # the last leaves room for one query token
    for q in ["pixel art", "🐱🎨✨ kawaii!", LONG_QUERY]:
        shipped, naive = query_direction_shipped(emb, prompts, q), query_direction_naive(emb, prompts, q)
        assert_same_direction(shipped, naive)
        assert shipped.n_truncated == (len(prompts) if q == LONG_QUERY else 1)
    assert query_direction_shipped(emb, PROMPTS, "x").prompts_hash == hash_prompts(PROMPTS)


def test_truncation_is_reported_and_logged(tiny, caplog):
    with caplog.at_level(logging.WARNING, logger="carlos.core.query"):
        qd = query_direction_naive(tiny, PROMPTS[:2], LONG_QUERY)
    assert qd.n_truncated == 2 and qd.truncated
    assert "2 of 2 prompt+query texts exceeded 77 tokens" in caplog.text
    assert not query_direction_naive(tiny, PROMPTS[:2], "short").truncated


def test_query_direction_differs_between_queries(tiny_cache):
    a = query_direction_cached(tiny_cache, "watercolor").direction
    b = query_direction_cached(tiny_cache, "东京的夜景").direction
    assert np.linalg.norm(a) > 0 and not np.allclose(a, b)


# ---------------------------------------------------------------- the BPE claim


def test_bpe_claim_holds_for_sample_prompts_and_tricky_queries(tiny):
    """tokens(p + " " + q) == tokens(p) without EOT + tokens(q) + EOT (before truncation)."""
    for p in PROMPTS:
        for q in map(normalize_query, TRICKY_QUERIES):
            assert tiny.bpe_ids(p + " " + q) == tiny.bpe_ids(p) + tiny.bpe_ids(q), (p, q)


def test_bpe_claim_failure_is_detected_and_stays_exact(tiny):
    """ftfy repairs the mojibake 'Ã ' only when text follows it: the prefix tokens change."""
    prompts = ["a portrait x Ã", PROMPTS[0]]
    q = "s bone"
    assert tiny.bpe_ids(prompts[0] + " " + q)[: len(tiny.bpe_ids(prompts[0]))] != tiny.bpe_ids(prompts[0])
    cached = query_direction_cached(build_prefix_cache(tiny, prompts), q)
    assert cached.n_reencoded == 1
    assert_same_direction(cached, query_direction_naive(tiny, prompts, q))


# ---------------------------------------------------------------- KV cache == naive


def test_prefix_cache_base_features_match_text_features(tiny, tiny_cache):
    np.testing.assert_allclose(tiny_cache.base_features, tiny.text_features(PROMPTS), rtol=1e-5, atol=1e-5)
    assert len(tiny_cache) == len(PROMPTS) and tiny_cache.nbytes > 0
    assert tiny_cache.embedder_id == tiny.embedder_id and not tiny_cache.base_features.flags.writeable


@pytest.mark.parametrize("query", TRICKY_QUERIES)
def test_cached_equals_naive_on_tiny(tiny, tiny_cache, query):
    cached = query_direction_cached(tiny_cache, query)
    naive = query_direction_naive(tiny, PROMPTS, query, prompts_hash="stand-in")
    assert cached.method == "kv-cache" and naive.method == "naive"
    assert cached.n_reencoded == 0
    assert_same_direction(cached, naive)
    assert cached.n_truncated == (len(PROMPTS) if query == LONG_QUERY else 0)


def test_truncation_edge_cases_match(tiny):
    """Prompts that alone hit the window (the query then changes nothing), and prompts that
    leave room for only part of the query, in one batch with different prefix lengths."""
    prompts = [
        "word " * 80,  # truncated alone: t(p + q) == t(p)
        "word " * 74,  # 74 + SOT + EOT = 76: one query token is cut, EOT takes the last slot
        "word " * 73,
        "a cat",
    ]
    q = "very colorful"
    cache = build_prefix_cache(tiny, prompts)
    assert cache.n_base_truncated == 1
    cached, naive = query_direction_cached(cache, q), query_direction_naive(tiny, prompts, q)
    assert cached.n_truncated == naive.n_truncated == 2
    assert_same_direction(cached, naive)
    only_long = query_direction_cached(build_prefix_cache(tiny, prompts[:1]), q)
    np.testing.assert_array_equal(only_long.direction, 0.0)


def test_build_progress_and_unsupported_towers(tiny):
    calls = []
    build_prefix_cache(tiny, PROMPTS[:3], progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (3, 3)
    other = load_clip("tiny", device="cpu")
    other.model.text_pool_type = "last"  # pooling the last slot would read padding: not cacheable
    with pytest.raises(InvalidInputError, match="query_direction_naive"):
        build_prefix_cache(other, PROMPTS[:2])


def test_cached_equals_naive_on_real_vit_b32_architecture():
    """Real ViT-B/32 text tower (random weights): 12 layers, 8 heads, width 512, QuickGELU."""
    emb = load_clip("ViT-B-32/random", device="cpu")
    prompts = [PROMPTS[0], "word " * 74]  # the second leaves room for one query token
    cache = build_prefix_cache(emb, prompts)
    for q in ["🐱🎨✨ 东京的夜景", "SELECT * FROM loras; DROP TABLE loras;--", LONG_QUERY]:
        cached, naive = query_direction_cached(cache, q), query_direction_naive(emb, prompts, q)
        assert_same_direction(cached, naive)
        assert cached.n_truncated == (2 if q == LONG_QUERY else 1)


def test_cached_across_buckets_mixed_lengths_and_threads(tiny, monkeypatch):
    """Several length buckets, new-token counts that differ within one batch (a prompt near the
    window, one whose tokenization changes, one that alone fills it), blocked MLPs with a remainder,
    and concurrent queries on one shared cache: always the naive and the shipped direction."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(prefix_cache, "_BUCKET", 3)
    monkeypatch.setattr(text_tower, "_MLP_ROWS", 5)
    prompts = [*PROMPTS, "a portrait x Ã", "word " * 73, "word " * 80, "a cat"]
    cache = build_prefix_cache(tiny, prompts, prompts_hash="mixed")
    assert len(cache._buckets) == 4 and cache.nbytes > 0
    queries = ["s bone", "very colorful", "in the style of Van Gogh, soft pastel colors!", LONG_QUERY]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(lambda q: query_direction_cached(cache, q), queries * 3))
    for i, q in enumerate(queries):
        cached = query_direction_cached(cache, q)
        naive = query_direction_naive(tiny, prompts, q, prompts_hash="mixed")
        assert_same_direction(cached, naive)
        assert_same_direction(cached, query_direction_shipped(tiny, prompts, q, prompts_hash="mixed"))
        for other in concurrent[i :: len(queries)]:
            np.testing.assert_allclose(other.direction, cached.direction, rtol=1e-6, atol=1e-7)
    assert query_direction_cached(cache, "s bone").n_reencoded == 1  # ftfy repairs "Ã s" once text follows


def test_cached_equals_shipped_on_real_vit_b32_with_many_prompts():
    """More prompts than one bucket, on the real architecture: the cached path equals the shipped procedure."""
    emb = load_clip("ViT-B-32/random", device="cpu")
    prompts = [f"{p}, variant {i}" for i in range(9) for p in PROMPTS]  # 72 prompts: two buckets
    cache = build_prefix_cache(emb, prompts)
    for q in ["pixel art", "in the style of Katsushika Hokusai"]:
        assert_same_direction(query_direction_cached(cache, q), query_direction_shipped(emb, prompts, q))
