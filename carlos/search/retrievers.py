"""The retrievers by name and what a search asks for: :class:`SearchConfig`.

Plain data shared by the search service, the capability check, the CLI and the pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from carlos.config import CORPUS_EMBEDDER, DEFAULT_PROMPT_SET, Thresholds
from carlos.core.ranking import check_top_k
from carlos.errors import InvalidInputError

RETRIEVERS = ("carlos", "behaviour", "bm25", "text-embedding")
LABELS = {
    "carlos": "CARLoS (CLIP query direction)",
    "behaviour": "Behaviour search (text-seeded)",
    "bm25": "BM25 over name + description",
    "text-embedding": "Text embedding of name + description",
}


@dataclass(frozen=True)
class SearchConfig:
    """What to search with; every field has the paper's or a documented default."""

    retriever: str = "carlos"
    top_k: int = 10
    thresholds: Thresholds = field(default_factory=Thresholds)
    clip_model: str = CORPUS_EMBEDDER  # registry name in carlos.models.clip_registry
    clip_checkpoint: str | None = None  # explicit weights file for the real model
    prompt_set: str = DEFAULT_PROMPT_SET  # query prompts P' come from its 'query' split
    text_model: str | None = None  # sentence-transformers model; None: offline MiniLM
    seeds: int = 8  # behaviour search: how many textual hits seed the direction
    seed_min_cos: float = 0.0  # behaviour search: seeds below this cosine to the mean are trimmed

    def __post_init__(self) -> None:
        if self.retriever not in RETRIEVERS:
            raise InvalidInputError(f"unknown retriever {self.retriever!r}; choose one of: {', '.join(RETRIEVERS)}")
        check_top_k(self.top_k)
        if not 1 <= self.seeds <= 100:
            raise InvalidInputError(f"seeds must be between 1 and 100, got {self.seeds}")


@dataclass(frozen=True)
class RetrieverStatus:
    name: str
    label: str
    available: bool
    reason: str  # why not, or what it runs on
