"""Query directions: what appending a query to the prompts does in CLIP text space.

PAPER.md, "Retrieval": ``dq = mean_p [ t(p + " " + q) - t(p) ]`` with ``t`` the
unnormalized CLIP text features. This module holds the validated query entry
point, the typed result and the plain (reference) computation; the KV-cache
fast path lives in :mod:`carlos.models.prefix_cache` and must agree with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from carlos.errors import InvalidInputError

logger = logging.getLogger(__name__)

#: A query longer than this (after normalization) is refused: CLIP reads 77 tokens at most.
MAX_QUERY_CHARS = 2000
_MAX_RAW_CHARS = 50 * MAX_QUERY_CHARS  # refuse before doing any work on megabyte inputs

METHODS = ("naive", "kv-cache")

# The tokenizer turns these literal strings into its start/end ids; in a query they would end the
# text early (features are pooled at the first end token), so they are removed like control chars.
_SPECIAL_TOKENS = re.compile(r"<start_of_text>|<end_of_text>", re.IGNORECASE)


@dataclass(frozen=True, eq=False)
class QueryDirection:
    """A query's direction in CLIP space, with what is needed to trust and cache it."""

    query: str  # normalized query text (see normalize_query)
    direction: np.ndarray  # (dim,) float32, read-only, not normalized
    n_prompts: int  # prompts averaged over
    n_truncated: int  # prompts whose "p + ' ' + q" exceeded the token window and was cut
    query_tokens: int  # BPE tokens of the query alone (no start/end tokens)
    embedder_id: str  # the CLIP space the direction lives in
    prompts_hash: str  # identifies the prompt list (cache key together with query, embedder_id)
    method: str  # "naive" or "kv-cache": how it was computed (same value up to float rounding)
    n_reencoded: int = 0  # kv-cache only: prompts whose cached prefix could not be fully reused

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidInputError(f"method must be one of {METHODS}, got {self.method!r}")
        vec = np.asarray(self.direction, dtype=np.float32)
        if vec.ndim != 1:
            raise InvalidInputError(f"direction must be a vector, got shape {vec.shape}")
        vec = vec.copy()
        vec.setflags(write=False)
        object.__setattr__(self, "direction", vec)

    @property
    def truncated(self) -> bool:
        """True when at least one prompt lost query tokens to the 77-token window."""
        return self.n_truncated > 0


def normalize_query(query: str) -> str:
    """The query as it is encoded: NFC, no control characters or literal special tokens
    (``<end_of_text>``), single spaces, stripped.

    Raises InvalidInputError for non-strings, empty queries and absurd lengths.
    """
    if not isinstance(query, str):
        raise InvalidInputError(f"query must be a string, got {type(query).__name__}")
    if len(query) > _MAX_RAW_CHARS:
        raise InvalidInputError(f"query is {len(query):,} characters; at most {MAX_QUERY_CHARS:,} are accepted")
    text = unicodedata.normalize("NFC", query)
    # whitespace controls (tab, newline) become spaces; other controls and lone surrogates go
    text = "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cs"))
    text = " ".join(_SPECIAL_TOKENS.sub(" ", text).split())
    if not text:
        raise InvalidInputError("query is empty; type a few words describing the effect to find")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidInputError(
            f"query is {len(text):,} characters; at most {MAX_QUERY_CHARS:,} are accepted "
            f"(CLIP reads only the first ~75 tokens of prompt + query anyway)"
        )
    return text


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """The prompt list as a list, refusing empty lists and non-string or blank items."""
    if isinstance(prompts, str):
        raise InvalidInputError("prompts must be a list of strings, not one string")
    prompts = list(prompts)
    if not prompts:
        raise InvalidInputError("prompts is empty; a query direction averages over at least one prompt")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise InvalidInputError(f"prompt {i} must be a non-empty string, got {p!r}")
    return prompts


def hash_prompts(prompts: Sequence[str]) -> str:
    """A stable id of a prompt list, used when the caller has no prompt-set hash."""
    payload = json.dumps(list(prompts), ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()


def compose(prompt: str, query: str) -> str:
    """The text the paper encodes: the query as a suffix after one space."""
    return prompt + " " + query


def log_truncation(query: str, n_truncated: int, n_prompts: int, context_length: int) -> None:
    if n_truncated:
        logger.warning(
            "query %r: %d of %d prompt+query texts exceeded %d tokens and were truncated",
            query[:80],
            n_truncated,
            n_prompts,
            context_length,
        )
