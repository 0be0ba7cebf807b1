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
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carlos import __version__
from carlos.config import CORPUS_EMBEDDER, DEFAULT_PROMPT_SET, RANDOM_CLIP
from carlos.core.representation import Representation, summarize
from carlos.core.uncertainty import estimate as estimate_uncertainty
from carlos.errors import InvalidInputError, InvalidLoRAFileError
from carlos.files.blobs import is_s3
from carlos.files.validate import sha256_file
from carlos.store.store import Store

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


#: Protocol dtype names -> torch dtype names.
DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


@dataclass(frozen=True)
class Protocol:
    """A named characterization protocol: which pairs and how their images are made.

    The whole spec is data, recorded with every representation (``provenance["protocol_spec"]``,
    :meth:`spec`). ``None`` means "the pipeline's default" for the generation fields, which is
    what the authors' release does (PAPER.md, "The authors' procedure as released").
    """

    name: str
    prompt_profile: str  # carlos.data.prompts profile: which index prompts of the job's prompt set
    seeds_per_prompt: int  # M: images j = 0..M-1 per prompt, identical for base and LoRA images
    description: str
    #: Denoising steps of full-size backends (None: the backend's default; the tiny backend keeps its own).
    steps: int | None = 25
    #: Classifier-free guidance (None: the pipeline's default, 5.0 for SDXL base 1.0).
    guidance: float | None = None
    #: Image side in pixels (None: the pipeline's default, 1024 x 1024 for SDXL base 1.0).
    size: int | None = None
    #: Negative prompt (None: none, as released; the backends take no other value yet).
    negative_prompt: str | None = None
    #: Weights dtype of the real backend on a GPU ("fp16" as released); the tiny backend stays fp32.
    dtype: str | None = "fp16"
    #: How image j's starting noise is drawn (carlos.models.diffusion's noise schemes; "authors": as released).
    noise: str = "authors"
    #: LoRA scale (cross_attention_kwargs={"scale": 1.0} in the release); informative, the backend applies it.
    lora_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in DTYPES:
            raise InvalidInputError(f"protocol {self.name}: dtype must be one of {', '.join(DTYPES)} or None, got {self.dtype!r}")

    def spec(self) -> dict[str, Any]:
        """The protocol as recorded in provenance."""
        return asdict(self)


PROTOCOLS = {
    p.name: p
    for p in (
        Protocol("paper", "paper", 16, "the paper's protocol: 280 prompts x 16 seeds, 25 steps, pipeline defaults (1024², guidance 5.0)"),
        Protocol("quick", "quick", 2, "on-demand: 1 prompt per subcategory (35) x 2 seeds = 70 pairs, settings as paper"),
        Protocol("smoke", "smoke", 2, "tests and demos: 2 prompts x 2 seeds = 4 pairs at the backend's defaults", steps=None),
        Protocol(
            "adaptive", "paper", 16, "the paper's pairs in stratified rounds, stopped once settled (carlos/core/adaptive.py); at most 4,480"
        ),
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


#: The prompt set of a job whose options name none: it was queued before jobs recorded one,
#: when the team's set was the default, so its stored pairs index that set's prompts.
LEGACY_PROMPT_SET = "carlos-prompts-v1"
#: Trigger words kept per job, and the length of each.
MAX_TRIGGER_WORDS, MAX_TRIGGER_CHARS = 32, 200


def protocol_pairs(protocol: Protocol, prompt_set: str | None = None) -> tuple[list[Pair], Any]:
    """The (prompt, seed) pairs of a protocol over ``prompt_set`` (default: the default set) and its subset."""
    from carlos.data.prompts import prompts_for_profile

    subset = prompts_for_profile(protocol.prompt_profile, prompt_set or DEFAULT_PROMPT_SET)
    pairs = []
    for p in subset.prompts:
        for seed in range(protocol.seeds_per_prompt):
            pairs.append(Pair(len(pairs), p.text, p.category, seed))
    return pairs, subset


def job_prompt_set(options: dict[str, Any] | None) -> str:
    """The prompt set a job was queued with (older jobs: :data:`LEGACY_PROMPT_SET`)."""
    return str((options or {}).get("prompt_set") or LEGACY_PROMPT_SET)


def trigger_words(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Trigger words as a job keeps them: whitespace collapsed, empty ones dropped, order kept.

    A list is the words in order; a plain string (a job option of older versions, or a
    caller's single word) is one word.
    """
    if value is None:
        return ()
    words = [value] if isinstance(value, str) else list(value)
    out = []
    for w in words:
        if not isinstance(w, str):
            raise InvalidInputError(f"trigger words must be text, got {w!r}")
        w = " ".join(w.split())[:MAX_TRIGGER_CHARS]
        if w:
            out.append(w)
    if len(out) > MAX_TRIGGER_WORDS:
        raise InvalidInputError(f"at most {MAX_TRIGGER_WORDS} trigger words, got {len(out)}")
    return tuple(out)


def lora_prompt(prompt: str, triggers: str | Sequence[str] | None) -> str:
    """The LoRA image's prompt, as the authors send it: ``", " + w`` appended for every trigger word w, in order.

    No trigger words: the prompt unchanged. A plain string counts as one word. The base image
    never gets them.
    """
    return prompt + "".join(f", {w}" for w in trigger_words(triggers))


def verify_lora_file(path: str, expected_sha256: str | None, *, where: str | None = None) -> None:
    """Raise InvalidLoRAFileError unless the file at ``path`` still hashes (streamed) to the
    sha256 its upload was validated with; called right before a backend loads it.
    ``expected_sha256`` None (a job queued without one) checks nothing."""
    if not expected_sha256:
        return
    try:
        actual = sha256_file(path)
    except OSError as err:
        raise InvalidLoRAFileError(f"LoRA file {path} unreadable{f' on {where}' if where else ''}: {err}") from err
    if actual != expected_sha256:
        raise InvalidLoRAFileError(lora_mismatch(path, expected_sha256, actual, where=where))


def lora_mismatch(path: str, expected_sha256: str, actual_sha256: str, *, where: str | None = None) -> str:
    """The error of a LoRA file whose bytes are not those of its upload."""
    return (
        f"LoRA file {path}{f' on {where}' if where else ''} does not match its upload: expected sha256 {expected_sha256}, "
        f"got {actual_sha256}; it was replaced or corrupted after upload, so nothing was generated (submit it again)"
    )


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

    def __init__(
        self,
        store: Store,
        backend: Any,
        clip: Any,
        *,
        chunk_pairs: int = 8,
        thumbnails: int = 4,
        files: Callable[[str, str | None], Path] | None = None,
    ) -> None:
        if chunk_pairs < 1:
            raise InvalidInputError("chunk_pairs must be >= 1")
        self.store = store
        #: A job's file reference (``s3://…``) -> a verified local copy (:func:`carlos.files.blobs.local_copy`).
        self.files = files
        self.backend = backend
        self.clip = clip
        self.chunk_pairs = chunk_pairs
        self.thumbnails = thumbnails
        self.stats = CharacterizerStats()

    def lora_of(self, job: dict[str, Any]) -> AbstractContextManager[Any]:
        """``backend.lora`` on the job's stored file, re-verified against its upload's sha256 first
        (a blob store's file is fetched into this machine's cache and verified there)."""
        ref, sha = job["file_path"], (job.get("options") or {}).get("sha256")
        if self.files is not None and is_s3(ref):
            return self.backend.lora(str(self.files(ref, sha)))
        verify_lora_file(ref, sha)
        return self.backend.lora(ref)

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

        protocol = get_protocol(job["protocol"])
        pairs, subset = protocol_pairs(protocol, job_prompt_set(job.get("options")))
        job_id = int(job["job_id"])
        trigger = trigger_words((job.get("options") or {}).get("trigger"))
        if protocol.name == "adaptive":  # rounds and a stopping rule: carlos/characterize/adaptive_run.py
            from carlos.characterize.adaptive_run import run_adaptive

            return run_adaptive(self, job, pairs, subset, protocol, trigger, progress=progress, should_continue=should_continue)
        done = self.store.jobs.done_pairs(job_id)
        self.stats.pairs_skipped_as_done += len(done)
        todo = [p for p in pairs if p.index not in done]
        if progress:
            progress(len(done), len(pairs))
        with self.lora_of(job):
            for start in range(0, len(todo), self.chunk_pairs):
                if should_continue is not None and not should_continue():
                    log.info("job %d stopped after %d of %d pairs", job_id, len(pairs) - len(todo) + start, len(pairs))
                    return None
                n_done = self.run_pairs(job_id, todo[start : start + self.chunk_pairs], trigger)
                if progress:
                    progress(n_done, len(pairs))
        return self.finish(job, subset, protocol, trigger)

    def run_pairs(self, job_id: int, chunk: Sequence[Pair], trigger: Sequence[str]) -> int:
        """Generate, embed and store one chunk of pairs (inside ``backend.lora``); returns the job's pairs done."""
        import time

        base = self._base_embeddings(list(chunk))
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
        return n_done

    def finish(
        self,
        job: dict[str, Any],
        subset: Any,
        protocol: Protocol,
        trigger: Sequence[str] | str | None,
        *,
        adaptive: dict[str, Any] | None = None,
    ) -> Representation:
        """Summarise the stored diffs with the numpy core and store the representation."""
        job_id = int(job["job_id"])
        meta, diffs = self.store.jobs.pair_diffs(job_id)
        pairs, _ = protocol_pairs(protocol, job_prompt_set(job.get("options")))
        if adaptive is not None:  # stopped early: the pairs of the rounds it ran (provenance["adaptive"])
            pairs = pairs[: int(adaptive["pairs_used"])]
        if len(meta) != len(pairs):
            raise InvalidInputError(f"job {job_id} has {len(meta)} of {len(pairs)} pairs; cannot finish")
        rep = summarize(diffs)
        # prompts are the independent draws (seeds share the prompt's effect): intervals per prompt cluster
        uncertainty = estimate_uncertainty(diffs, meta["prompt"].tolist()).to_dict()
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
                "trigger": ", ".join(trigger_words(trigger)) or None,  # the text appended after ", "
                "trigger_words": list(trigger_words(trigger)),
                "protocol_spec": protocol.spec(),
                "settings": settings,
                "clip_weights": getattr(self.clip, "weights_source", None),
                "uncertainty": uncertainty,
                **({"adaptive": adaptive} if adaptive is not None else {}),
            },
        )
        self.store.jobs.set_status(job_id, "finished")
        return rep
