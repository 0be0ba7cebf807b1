"""``search``: LoRAs that do what a query says, with any retriever."""

from __future__ import annotations

import argparse
from typing import Any

from carlos.cli.common import (
    add_clip_model,
    add_json,
    add_prompt_set,
    add_threshold_options,
    emit,
    hits_text,
    open_store,
    thresholds_from,
)
from carlos.config import CORPUS_EMBEDDER
from carlos.errors import WeightsUnavailableError


def _search(args: argparse.Namespace) -> int:
    from carlos.search.retrievers import RETRIEVERS, SearchConfig
    from carlos.search.service import SearchService

    config = SearchConfig(
        retriever=args.retriever,
        top_k=args.top_k,
        thresholds=thresholds_from(args),
        clip_model=args.clip_model,
        clip_checkpoint=args.clip_checkpoint,
        prompt_set=args.prompt_set,
        text_model=args.text_model,
    )
    service = SearchService(open_store(args))
    try:
        result = service.search(args.query, config)
    except WeightsUnavailableError as e:
        others = ", ".join(r for r in RETRIEVERS if r != "carlos")
        raise WeightsUnavailableError(
            f"{e}\nWithout these weights, search with --retriever behaviour (text-seeded, in the "
            f"LoRAs' behaviour space) or one of: {others}."
        ) from e
    emit(args, result.to_dict(), hits_text(result))
    return 0


def register(sub: Any) -> None:
    """``search``."""
    from carlos.search.retrievers import RETRIEVERS

    p = sub.add_parser("search", help="find LoRAs that do what the query says")
    p.add_argument("query", help="what the LoRA should do, e.g. 'pixel art' or 'snowy winter scene'")
    p.add_argument(
        "--retriever",
        choices=RETRIEVERS,
        default="carlos",
        help="carlos: CLIP query direction (needs ViT-B-32 weights); behaviour: "
        "text-seeded behaviour search; bm25 / text-embedding: textual baselines",
    )
    p.add_argument("--top-k", type=int, default=10)
    add_clip_model(p, CORPUS_EMBEDDER)
    p.add_argument("--clip-checkpoint", help="CLIP ViT-B-32 weights: a transformers folder or an open_clip file")
    add_prompt_set(p, "--retriever carlos: the prompt set whose query prompts P' form the query direction")
    p.add_argument("--text-model", help="sentence-transformers model name or folder")
    add_threshold_options(p)
    add_json(p)
    p.set_defaults(func=_search)
