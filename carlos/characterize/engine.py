"""Characterization: paired images → CLIP embeddings → diffs → representation.

The orchestrator of one job. Work is done in chunks of (prompt, seed) pairs;
after each chunk the diffs are written to the store, so a job killed at any
point resumes from the pairs already done and never counts one twice. The
final representation is always computed from the *stored* diffs by the numpy
core. Base-image embeddings are cached per (backend settings, CLIP model,
prompt, seed) and shared by every LoRA.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from carlos import __version__
from carlos.config import CORPUS_EMBEDDER, RANDOM_CLIP
from carlos.core.representation import Representation, summarize
from carlos.errors import InvalidInputError
from carlos.store.store import Store

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Protocol:
    """A named characterization protocol, recorded in provenance."""

    name: str
    prompt_profile: str  # carlos.data.prompts profile: which index prompts
    seeds_per_prompt: int  # M: seeds 0..M-1, identical for base and LoRA images
    steps: int | None  # denoising steps for full-size backends (None: backend default)
    size: int | None  # image side for full-size backends (None: backend default)
    description: str


PROTOCOLS = {
    p.name: p
    for p in (
        Protocol("paper", "paper", 16, 25, 1024, "the paper's protocol: 280 prompts x 16 seeds, 25 steps, 1024², scale 1.0"),
        Protocol("quick", "quick", 2, 25, 1024, "on-demand: 1 prompt per subcategory (35) x 2 seeds = 70 pairs, 25 steps, 1024²"),
        Protocol("smoke", "smoke", 2, None, None, "tests and demos: 2 prompts x 2 seeds = 4 pairs at the backend's defaults"),
    )
}

#: Which CLIP model embeds the images of each diffusion backend.
CLIP_FOR_BACKEND = {"tiny": "tiny", "sdxl": CORPUS_EMBEDDER, "sdxl-random": RANDOM_CLIP}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise InvalidInputError(f"unknown protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}") from None


@dataclass(frozen=True)
class Pair:
    index: int
    prompt: str
    category: str
    seed: int


def protocol_pairs(protocol: Protocol) -> tuple[list[Pair], Any]:
    """The (prompt, seed) pairs of a protocol and the prompt subset they come from."""
    from carlos.data.prompts import prompts_for_profile

    subset = prompts_for_profile(protocol.prompt_profile)
    pairs = []
    for p in subset.prompts:
        for seed in range(protocol.seeds_per_prompt):
            pairs.append(Pair(len(pairs), p.text, p.category, seed))
    return pairs, subset


def lora_prompt(prompt: str, trigger: str | None) -> str:
    """The LoRA image's prompt: trigger words appended as ", <trigger>" (PAPER.md)."""
    return f"{prompt}, {trigger}" if trigger else prompt


def png_thumbnail(image: np.ndarray, side: int = 128) -> bytes:
    from PIL import Image

    img = Image.fromarray(np.asarray(image, dtype=np.uint8))
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@dataclass
class CharacterizerStats:
    base_generated: int = 0
    base_cache_hits: int = 0
    lora_generated: int = 0
    pairs_skipped_as_done: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"generate": 0.0, "embed": 0.0, "store": 0.0})


class Characterizer:
    """Runs jobs on one loaded diffusion backend and CLIP model (no reload per LoRA)."""

    def __init__(self, store: Store, backend: Any, clip: Any, *, chunk_pairs: int = 8, thumbnails: int = 4) -> None:
        if chunk_pairs < 1:
            raise InvalidInputError("chunk_pairs must be >= 1")
        self.store = store
        self.backend = backend
        self.clip = clip
        self.chunk_pairs = chunk_pairs
        self.thumbnails = thumbnails
        self.stats = CharacterizerStats()

    def base_key(self) -> str:
        """Identifies base images: backend and settings, and the CLIP that embedded them."""
        blob = json.dumps([self.backend.settings_dict(), self.clip.embedder_id], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def _base_embeddings(self, pairs: list[Pair]) -> dict[tuple[str, int], np.ndarray]:
        import time

        key = self.base_key()
        wanted = [(p.prompt, p.seed) for p in pairs]
        have = self.store.jobs.base_embeddings(key, wanted)
        self.stats.base_cache_hits += len(have)
        missing = [p for p in pairs if (p.prompt, p.seed) not in have]
        if missing:
            t = time.perf_counter()
            images = self.backend.generate([p.prompt for p in missing], [p.seed for p in missing], base=True)
            t2 = time.perf_counter()
            feats = self.clip.image_features(images)
            t3 = time.perf_counter()
            rows = []
            for p, img, f in zip(missing, images, feats):
                have[(p.prompt, p.seed)] = f
                rows.append((p.prompt, p.seed, f, png_thumbnail(img)))
            self.store.jobs.put_base_embeddings(key, rows)
            self.stats.base_generated += len(missing)
            self.stats.seconds["generate"] += t2 - t
            self.stats.seconds["embed"] += t3 - t2
            self.stats.seconds["store"] += time.perf_counter() - t3
        return have

    def run_job(
        self, job: dict[str, Any], *, progress: Progress | None = None, should_continue: Callable[[], bool] | None = None
    ) -> Representation | None:
        """Generate the missing pairs of ``job`` and, when complete, store its representation.

        Returns None when ``should_continue`` asked to stop (cancelled) before the end.
        """
        import time

        protocol = get_protocol(job["protocol"])
        pairs, subset = protocol_pairs(protocol)
        job_id = int(job["job_id"])
        trigger = (job.get("options") or {}).get("trigger") or None
        done = self.store.jobs.done_pairs(job_id)
        self.stats.pairs_skipped_as_done += len(done)
        todo = [p for p in pairs if p.index not in done]
        if progress:
            progress(len(done), len(pairs))
        with self.backend.lora(job["file_path"]):
            for start in range(0, len(todo), self.chunk_pairs):
                if should_continue is not None and not should_continue():
                    log.info("job %d stopped after %d of %d pairs", job_id, len(pairs) - len(todo) + start, len(pairs))
                    return None
                chunk = todo[start : start + self.chunk_pairs]
                base = self._base_embeddings(chunk)
                t = time.perf_counter()
                images = self.backend.generate([lora_prompt(p.prompt, trigger) for p in chunk], [p.seed for p in chunk])
                t2 = time.perf_counter()
                feats = self.clip.image_features(images)
                t3 = time.perf_counter()
                self.stats.lora_generated += len(chunk)
                rows = [
                    {
                        "pair_index": p.index,
                        "prompt": p.prompt,
                        "category": p.category,
                        "seed": p.seed,
                        "diff": f.astype(np.float64) - base[(p.prompt, p.seed)],
                    }
                    for p, f in zip(chunk, feats)
                ]
                thumbs = [
                    (p.index, self.store.jobs.base_thumbnail(self.base_key(), p.prompt, p.seed), png_thumbnail(img))
                    for p, img in zip(chunk, images)
                    if p.index < self.thumbnails
                ]
                with self.store.transaction():
                    n_done = self.store.jobs.add_pair_results(job_id, rows)
                    if thumbs:
                        self.store.jobs.put_thumbnails(job_id, thumbs)
                self.stats.seconds["generate"] += t2 - t
                self.stats.seconds["embed"] += t3 - t2
                self.stats.seconds["store"] += time.perf_counter() - t3
                if progress:
                    progress(n_done, len(pairs))
        return self.finish(job, subset, protocol, trigger)

    def finish(self, job: dict[str, Any], subset: Any, protocol: Protocol, trigger: str | None) -> Representation:
        """Summarise the stored diffs with the numpy core and store the representation."""
        job_id = int(job["job_id"])
        meta, diffs = self.store.jobs.pair_diffs(job_id)
        pairs, _ = protocol_pairs(protocol)
        if len(meta) != len(pairs):
            raise InvalidInputError(f"job {job_id} has {len(meta)} of {len(pairs)} pairs; cannot finish")
        rep = summarize(diffs)
        settings = self.backend.settings_dict()
        self.store.reps.put(
            job["lora_id"],
            self.clip.embedder_id,
            rep.direction,
            rep.strength,
            rep.consistency,
            rep.n,
            {
                "protocol": protocol.name,
                "prompt_set": subset.id,
                "prompt_hash": subset.content_hash,
                "seeds": list(range(protocol.seeds_per_prompt)),
                "steps": settings.get("steps"),
                "scale": settings.get("lora_scale"),
                "backend": self.backend.backend_id,
                "source": "characterized",
                "source_hash": (job.get("options") or {}).get("sha256"),
                "code_version": f"carlos-dashboard {__version__}",
                "job_id": job_id,
                "trigger": trigger,
                "settings": settings,
                "clip_weights": getattr(self.clip, "weights_source", None),
            },
        )
        self.store.jobs.set_status(job_id, "finished")
        return rep
