"""Relevance of retrieved LoRAs: the judge and the paper's top-3 relevance protocol.

Each retriever's top-3 LoRAs generate images that a judge scores against the
query; scores are min-max normalized over all queries and retrievers and
averaged per retriever. Our judge is CLIP image-text cosine
(:class:`ClipImageJudge`); it needs real CLIP and SDXL weights and each LoRA's
file. Without a judge the report says why, and no relevance number is made up.

:mod:`carlos.evaluate.harness` runs the retrievers and measures diversity; it hands its
finished runs here. This module loads models (SDXL, CLIP) and never imports the
harness: a run is anything shaped like :class:`RankedRun`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from carlos.config import CORPUS_EMBEDDER
from carlos.errors import InvalidInputError

log = logging.getLogger(__name__)

TOP3_PROTOCOL = (
    "each retriever's top-3 LoRAs generate images that the judge scores against the query; "
    "scores are min-max normalized over all queries and retrievers, then averaged"
)


class RankedRun(Protocol):
    """What the protocol reads of a retriever's run (:class:`carlos.evaluate.harness.RetrieverRun`)."""

    @property
    def name(self) -> str: ...

    @property
    def available(self) -> bool: ...

    @property
    def rankings(self) -> dict[str, list[str]]: ...  # query -> ranked lora ids


# ---------------------------------------------------------------------------- relevance judge
class RelevanceJudge(Protocol):
    name: str
    meaningful: bool  # False for test judges on random weights

    def score(self, query: str, lora: Mapping[str, Any]) -> float | None:
        """Relevance of what ``lora`` generates to ``query``; None when it cannot be scored."""


class ClipImageJudge:
    """CLIP image-text cosine of images the LoRA generates from neutral prompts.

    The images depend on the LoRA only, so they are generated and embedded once per
    LoRA and scored against every query. It shares CLIP ViT-B/32 with the CARLoS
    retriever, which biases it towards CARLoS (the paper used SigLIP2, Qwen2.5-VL,
    ImageReward and HPS v2).
    """

    def __init__(self, backend: Any, clip: Any, prompts: Sequence[str], seeds: Sequence[int] = (0,), *, meaningful: bool = True) -> None:
        if not prompts or not seeds:
            raise InvalidInputError("the judge needs at least one prompt and one seed")
        self.backend, self.clip = backend, clip
        self.prompts, self.seeds = list(prompts), [int(s) for s in seeds]
        self.meaningful = meaningful
        self.name = f"clip-image-text:{clip.embedder_id}@{getattr(backend, 'backend_id', '?')}"
        self._images: dict[str, np.ndarray] = {}
        self._texts: dict[str, np.ndarray] = {}

    def _unit(self, x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    def score(self, query: str, lora: Mapping[str, Any]) -> float | None:
        from carlos.characterize.engine import lora_prompt

        path = lora.get("file_path")
        if not path or not Path(path).is_file():
            return None
        key = str(lora["lora_id"])
        if key not in self._images:
            trig = lora.get("trigger_words")
            trigger = ", ".join(map(str, trig)) if isinstance(trig, (list, tuple, np.ndarray)) and len(trig) else None
            pairs = [(p, s) for p in self.prompts for s in self.seeds]
            with self.backend.lora(path):
                imgs = self.backend.generate([lora_prompt(p, trigger) for p, _ in pairs], [s for _, s in pairs])
            self._images[key] = self._unit(self.clip.image_features(imgs))
        if query not in self._texts:
            self._texts[query] = self._unit(self.clip.text_features([query])[0])
        return float((self._images[key] @ self._texts[query]).mean())


def default_judge_status() -> tuple[bool, str]:
    """Whether the real judge (CLIP ViT-B/32 OpenAI + SDXL base 1.0) can run here, and why not."""

    from carlos.search.capabilities import clip_weights, sdxl_weights

    clip = clip_weights()
    if not clip.available:
        return False, f"no relevance judge: {clip.name} unavailable ({clip.detail})"
    from carlos.models.sdxl_loader import WEIGHTS_ENV

    sdxl = sdxl_weights()
    if not sdxl.available:
        return False, (
            f"no relevance judge: SDXL base 1.0 weights are not available offline ({sdxl.detail}; set "
            f"{WEIGHTS_ENV} or fill the Hugging Face cache; see `python -m carlos characterize --help`)"
        )
    return True, f"CLIP {clip.detail}; SDXL {sdxl.detail}"


def _load_default_judge() -> ClipImageJudge:
    from carlos.data.prompts import get_prompt_set
    from carlos.models.clip import load_clip
    from carlos.models.diffusion import DiffusionBackend

    pset = get_prompt_set()
    firsts: dict[str, str] = {}
    for p in pset.query_prompts:
        firsts.setdefault(p.category, p.text)
    return ClipImageJudge(DiffusionBackend("sdxl"), load_clip(CORPUS_EMBEDDER), list(firsts.values())[:4])


# ---------------------------------------------------------------------------- protocol
@dataclass(frozen=True)
class RelevanceReport:
    available: bool
    reason: str
    protocol: str = TOP3_PROTOCOL
    judge: str | None = None
    meaningful: bool = False
    per_retriever: dict[str, dict[str, float]] = field(default_factory=dict)
    scores: list[dict[str, Any]] = field(default_factory=list)  # retriever, query, rank, lora_id, raw


def relevance_top_k(store: Any, runs: Sequence[RankedRun], judge: RelevanceJudge, top: int = 3) -> RelevanceReport:
    """The top-``top`` relevance protocol over finished runs with ``judge``."""
    rows, lora_cache = [], {}
    for run in runs:
        if not run.available:
            continue
        for query, ranked in run.rankings.items():
            for rank, lid in enumerate(ranked[:top], start=1):
                if lid not in lora_cache:
                    lora_cache[lid] = store.loras.get(lid)
                rows.append(
                    {"retriever": run.name, "query": query, "rank": rank, "lora_id": lid, "raw": judge.score(query, lora_cache[lid])}
                )
    scored = [r["raw"] for r in rows if r["raw"] is not None]
    if not scored:
        return RelevanceReport(
            False, f"the judge {judge.name} could score none of the {len(rows)} top-{top} hits (no local LoRA files)", judge=judge.name
        )
    lo, hi = min(scored), max(scored)
    per = {}
    for run in runs:
        mine = [r for r in rows if r["retriever"] == run.name]
        if not mine:
            continue
        per_query: dict[str, list[float]] = {}
        for r in mine:
            if r["raw"] is not None:
                per_query.setdefault(r["query"], []).append((r["raw"] - lo) / (hi - lo) if hi > lo else 0.0)
        means = [float(np.mean(v)) for v in per_query.values()]
        per[run.name] = {
            "score": float(np.mean(means)) if means else float("nan"),
            "queries_scored": len(per_query),
            "hits_scored": sum(r["raw"] is not None for r in mine),
            "hits": len(mine),
        }
    return RelevanceReport(
        True,
        f"judged {len(scored)} of {len(rows)} top-{top} hits",
        judge=judge.name,
        meaningful=judge.meaningful,
        per_retriever=per,
        scores=rows,
    )


def judged_relevance(store: Any, runs: Sequence[RankedRun], judge: Any, top: int) -> RelevanceReport:
    """The top-k relevance report for ``judge`` (None, "auto" or a judge), or why there is none."""
    if judge is None:
        return RelevanceReport(False, "relevance not computed: no judge was requested (--judge none)")
    if isinstance(judge, str):
        if judge != "auto":
            raise InvalidInputError(f"judge must be 'auto', None or a judge object, got {judge!r}")
        ok, why = default_judge_status()
        if not ok:
            return RelevanceReport(False, why)
        ids = {lid for r in runs if r.available for ranked in r.rankings.values() for lid in ranked[:top]}
        with_files = [i for i in ids if (p := store.loras.get(i).get("file_path")) and Path(p).is_file()]
        if not with_files:
            return RelevanceReport(
                False,
                f"no relevance judge run: none of the {len(ids)} top-{top} LoRAs has a "
                "local .safetensors file (the released corpus ships representations only)",
            )
        judge = _load_default_judge()
    return relevance_top_k(store, runs, judge, top)
