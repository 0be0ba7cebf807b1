"""Okapi BM25 over creator text: the lexical textual baseline.

The index is built from documents already cleaned by :func:`carlos.core.text.document_text`
and tokenized by :func:`carlos.core.text.tokenize` (queries go through the same call),
scored with numpy, and serialized to plain JSON so the store can cache it; the
fingerprint and the tokenizer version say when a cached index must be rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from carlos.core.text import TOKENIZER_VERSION, tokenize
from carlos.errors import InvalidInputError


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


@functools.lru_cache(maxsize=1 << 16)
def _term_counts(config: BM25Config, doc: str) -> Counter[str]:
    """A document's term counts, kept across rebuilds: a corpus that gains one LoRA re-tokenizes one
    text (callers only read the Counter)."""
    return Counter(config.tokens(doc))


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
        """Index ``docs`` (already cleaned, e.g. by :func:`carlos.core.text.document_text`); may be empty."""
        if isinstance(docs, str) or not all(isinstance(d, str) for d in docs):
            raise InvalidInputError("BM25Index.build expects a list of strings (use '' for no text)")
        config = config or BM25Config()
        postings: dict[str, list[tuple[int, int]]] = {}
        doc_len = np.zeros(len(docs), dtype=np.int64)
        for i, doc in enumerate(docs):
            counts = _term_counts(config, doc)
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
