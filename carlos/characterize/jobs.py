"""Characterization jobs: submit an upload, run the queue, report progress.

``submit`` checks that the acting user may write (the access policy of
:mod:`carlos.core.access`), then validates the untrusted file, copies it under its sha256
(never the uploader's name), registers the LoRA and enqueues a job; ``cancel`` is a
reviewer's write too. The worker finishing jobs is the system, not a user. ``Worker`` takes jobs
one at a time (``python -m carlos worker``); a job whose worker stopped sending
heartbeats is taken over and resumes from its stored pairs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carlos.characterize.engine import (
    CLIP_FOR_BACKEND,
    DTYPES,
    Characterizer,
    Progress,
    get_protocol,
    job_prompt_set,
    protocol_pairs,
    trigger_words,
)
from carlos.config import DEFAULT_BACKEND, DEFAULT_PROMPT_SET, DEFAULT_PROTOCOL
from carlos.core.access import AccessPolicy, CurrentUser, authorize
from carlos.errors import CarlosError, InvalidInputError, StoreUnavailableError
from carlos.files.blobs import Blobs, LocalBlobs, local_copy
from carlos.files.validate import LoRAFileLimits, LoRAFileReport, inspect_lora, safe_filename
from carlos.store.store import Store

log = logging.getLogger(__name__)

#: Cross-attention width of the tiny test pipeline; accepted only for the tiny backend.
TINY_CONTEXT_DIM = 96


def limits_for(backend: str, base: LoRAFileLimits | None = None) -> LoRAFileLimits:
    """File limits for a backend: the tiny demo pipeline also accepts its own tiny LoRAs."""
    base = base or LoRAFileLimits()
    if backend == "tiny":
        from dataclasses import replace

        return replace(base, sdxl_context_dims=(*base.sdxl_context_dims, TINY_CONTEXT_DIM))
    return base


def check_backend(backend: str) -> str:
    if backend not in CLIP_FOR_BACKEND:
        raise InvalidInputError(f"unknown backend {backend!r}; choose one of: {', '.join(CLIP_FOR_BACKEND)}")
    return backend


@dataclass(frozen=True)
class Submission:
    job_id: int
    lora_id: str
    report: LoRAFileReport
    duplicate_of_job: int | None  # an identical job already existed: nothing new was queued
    already_known: bool  # the same file (sha256) was uploaded before


def validate_upload(path: Path, original_name: str | None, backend: str, limits: LoRAFileLimits | None = None) -> LoRAFileReport:
    """Validation report of an upload (raises on unsafe or unsupported files)."""
    from carlos.files.validate import validate_lora

    return validate_lora(path, limits_for(check_backend(backend), limits), original_name=original_name)


def submit(
    store: Store,
    path: str | Path,
    *,
    user: CurrentUser,
    policy: AccessPolicy | None = None,
    backend: str = DEFAULT_BACKEND,
    protocol: str = DEFAULT_PROTOCOL,
    trigger: str | Sequence[str] | None = None,
    original_name: str | None = None,
    uploads_dir: Path | None = None,
    blobs: Blobs | None = None,
    limits: LoRAFileLimits | None = None,
    name: str | None = None,
    prompt_set: str = DEFAULT_PROMPT_SET,
    adaptive: dict[str, Any] | None = None,
) -> Submission:
    """Validate, store a sanitised copy, register the LoRA and enqueue its job, as ``user``.

    ``user`` must be allowed to write (PermissionDeniedError otherwise, before the file is
    read or anything stored); it is recorded as the job's ``requested_by``. ``policy``: see
    :func:`~carlos.core.access.authorize` (default: resolved now).

    ``adaptive``: stopping settings of an ``adaptive`` job (``AdaptiveSettings`` fields, and
    ``thresholds``: a dict of ``strength_max`` / ``consistency_min``; see ``adaptive_run``).

    ``trigger``: the trigger words, in order (a plain string is one word); each LoRA prompt
    gets ``", " + word`` for every one (:func:`~carlos.characterize.engine.lora_prompt`).
    ``prompt_set``: a registered prompt set (default: the authors'). ``name`` (e.g. from a
    manifest) is the display name of a LoRA registered for the first time; by default the
    file's metadata title or its file name. ``blobs``: where the file is kept for the workers
    (default: ``uploads_dir``, else the store's ``cache/uploads`` folder).
    """
    requester = authorize(user, "upload a LoRA for characterization", policy)
    path = Path(path)
    proto = get_protocol(protocol)
    words = list(trigger_words(trigger))
    pairs, _ = protocol_pairs(proto, prompt_set)  # an unknown or absent prompt set fails before anything is stored
    report = validate_upload(path, original_name or path.name, backend, limits)
    blobs = blobs or LocalBlobs(uploads_dir or store.path.parent / "cache" / "uploads")
    stored = blobs.put(path, report.sha256)  # the job's reference: a path, or s3://… for workers anywhere
    lora_id = f"sha256:{report.sha256}"
    known = store.loras.find_by_sha256(report.sha256) is not None
    name = (
        name
        or report.metadata.get("ss_output_name")
        or report.metadata.get("modelspec.title")
        or Path(safe_filename(original_name or path.name)).stem
    )
    store.loras.upsert(
        [
            {
                "lora_id": lora_id,
                "source": "upload",
                "name": str(name)[:200],
                "sha256": report.sha256,
                "file_path": str(stored),
                "file_report": report.to_dict(),
                "trigger_words": list(report.trigger_words or []),
                "folder_name": safe_filename(original_name or path.name),
            }
        ]
    )
    fingerprint_upload(store, path, lora_id, report, original_name or path.name, limits_for(backend, limits), user, policy, stored)
    for job_id, options in store.jobs.live_of(lora_id, backend, protocol):
        opts = json.loads(options or "{}")
        same_adaptive = opts.get("adaptive") == _adaptive_options(adaptive).get("adaptive")
        if list(trigger_words(opts.get("trigger"))) == words and job_prompt_set(opts) == prompt_set and same_adaptive:
            return Submission(int(job_id), lora_id, report, int(job_id), known)
    job_id = store.jobs.enqueue(
        lora_id,
        str(stored),
        backend,
        protocol,
        len(pairs),
        {"trigger": words, "prompt_set": prompt_set, "sha256": report.sha256, **_adaptive_options(adaptive)},
        requester,
    )
    return Submission(job_id, lora_id, report, None, known)


def fingerprint_upload(
    store: Store,
    stored: Path,
    lora_id: str,
    report: LoRAFileReport,
    file_name: str,
    limits: LoRAFileLimits,
    user: CurrentUser,
    policy: AccessPolicy | None = None,
    ref: str | None = None,
) -> None:
    """Store an upload's weight fingerprint and weight-space matches (once per file), before any GPU work;
    ``stored`` is read here, ``ref`` (default: its path) is where the file is kept for the workers.

    A file that validated but cannot be fingerprinted is logged, not refused: the weights
    check is an addition to the upload, not a gate on it.
    """
    from carlos.characterize import fingerprints

    if store.fingerprints.get(lora_id) is not None:
        return
    try:
        fingerprints.register(
            store, stored, user=user, policy=policy, lora_id=lora_id, file_name=file_name, file_path=ref, limits=limits, report=report
        )
    except CarlosError as e:
        log.warning("upload %s: no weight fingerprint: %s", lora_id, e)


def _adaptive_options(adaptive: dict[str, Any] | None) -> dict[str, Any]:
    if not adaptive:
        return {}
    adaptive = dict(adaptive)
    thresholds = adaptive.pop("thresholds", None)
    return {"adaptive": adaptive, **({"thresholds": thresholds} if thresholds is not None else {})}


def cancel(store: Store, job_id: int, user: CurrentUser, *, policy: AccessPolicy | None = None) -> bool:
    """Cancel a queued or running job as ``user`` (reviewers only: PermissionDeniedError
    otherwise, and nothing changes); a running worker stops at its next chunk. False if the
    job was neither queued nor running."""
    authorize(user, f"cancel job {job_id}", policy)
    return store.jobs.cancel(job_id)


def inspect_upload(path: Path, original_name: str | None, backend: str) -> LoRAFileReport:
    """Non-raising report for the dashboard's validation panel."""
    return inspect_lora(path, limits_for(check_backend(backend)), original_name=original_name)


BackendFactory = Callable[[str, str], Any]  # (backend name, protocol) -> DiffusionBackend
ClipFactory = Callable[[str], Any]  # (clip registry name) -> ClipEmbedder


def backend_settings(name: str, protocol: str, *, gpu: bool | None = None) -> tuple[Any, str | None]:
    """(DiffusionSettings, dtype or None) a backend runs a protocol's spec with.

    The protocol's noise scheme always applies; its steps, guidance and size replace the
    backend's defaults where they are not None (None: the pipeline's default); the tiny demo
    pipeline keeps its own toy steps and size. The dtype applies to full-size backends on a GPU (``gpu``: default, whether
    torch sees CUDA); None lets the backend choose (fp32 on a CPU).
    """
    from dataclasses import replace

    from carlos.models.diffusion import get_backend_spec

    proto = get_protocol(protocol)
    if proto.negative_prompt is not None:
        raise InvalidInputError(f"protocol {proto.name}: the diffusion backends take no negative prompt")
    settings = replace(get_backend_spec(name).default_settings, noise=proto.noise)
    if name == "tiny":
        return settings, None
    changes: dict[str, Any] = {"lora_scale": proto.lora_scale}
    if proto.steps is not None:
        changes["steps"] = proto.steps
    if proto.guidance is not None:
        changes["guidance_scale"] = proto.guidance
    if proto.size is not None:
        changes.update(height=proto.size, width=proto.size)
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    return replace(settings, **changes), (DTYPES[proto.dtype] if proto.dtype is not None and gpu else None)


def default_backend_factory(name: str, protocol: str, *, fast_path: Any = None) -> Any:
    """The backend a worker runs ``protocol`` with; ``fast_path``: a
    :class:`~carlos.models.fast_path.FastPath` (default: all its speed-ups, none of which changes the images)."""
    from carlos.models.diffusion import DiffusionBackend

    if name == "tiny":
        import torch

        # the tiny pipeline's ops are too small to gain from threads; on a busy 2-core
        # machine extra threads made it 10-40x slower (measured)
        torch.set_num_threads(1)
    settings, dtype = backend_settings(name, protocol)
    return DiffusionBackend(name, settings=settings, dtype=dtype, fast_path=fast_path)


def default_clip_factory(name: str) -> Any:
    from carlos.models.clip import load_clip

    return load_clip(name)


class Worker:
    """Processes queued jobs; keeps one Characterizer per (backend, protocol settings)."""

    def __init__(
        self,
        store: Store,
        *,
        backend_factory: BackendFactory = default_backend_factory,
        clip_factory: ClipFactory = default_clip_factory,
        worker_id: str | None = None,
        stale_after_s: float = 120.0,
        chunk_pairs: int = 8,
        outage_s: float = 300.0,
        blobs: Blobs | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.blobs = blobs  # where s3:// references are fetched from (None: the environment's settings)
        self.cache_dir = cache_dir or store.path.parent / "cache"  # fetched uploads are kept in its blobs/
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.stale_after_s = stale_after_s
        self.chunk_pairs = chunk_pairs
        self.outage_s = outage_s  # how long an unreachable store is waited for before the worker stops
        self._current: int | None = None  # the job being run (resumed after an outage)
        self._backend_factory = backend_factory
        self._clip_factory = clip_factory
        self._characterizers: dict[tuple[str, str], Characterizer] = {}
        self._clips: dict[str, Any] = {}

    def characterizer(self, backend: str, protocol: str) -> Characterizer:
        settings_key = protocol if backend != "tiny" else "-"
        key = (backend, settings_key)
        if key not in self._characterizers:
            clip_name = CLIP_FOR_BACKEND[check_backend(backend)]
            if clip_name not in self._clips:
                self._clips[clip_name] = self._clip_factory(clip_name)
            self._characterizers[key] = Characterizer(
                self.store,
                self._backend_factory(backend, protocol),
                self._clips[clip_name],
                chunk_pairs=self.chunk_pairs,
                files=lambda ref, sha: local_copy(ref, sha, self.blobs, cache=self.cache_dir),
            )
        return self._characterizers[key]

    def run_one(self, progress: Progress | None = None, job_id: int | None = None) -> int | None:
        """Take and run one job (the next, or ``job_id``); returns its id, or None if none."""
        job = self.store.jobs.claim_next(self.worker_id, self.stale_after_s, job_id)
        if job is None:
            return None
        job_id = self._current = int(job["job_id"])
        log.info("worker %s: job %d (%s, %s, %s)", self.worker_id, job_id, job["lora_id"], job["backend"], job["protocol"])

        def still_wanted() -> bool:
            return self.store.jobs.heartbeat(job_id, self.worker_id) == "running"

        try:
            rep = self.characterizer(job["backend"], job["protocol"]).run_job(job, progress=progress, should_continue=still_wanted)
        except StoreUnavailableError:
            raise  # the store, not the job: it stays this worker's, to resume (see run)
        except CarlosError as e:
            self.store.jobs.set_status(job_id, "failed", str(e))
            log.error("job %d failed: %s", job_id, e)
        except Exception as e:  # a worker must survive a bad job and say why it failed
            self.store.jobs.set_status(job_id, "failed", f"{type(e).__name__}: {e}")
            log.exception("job %d failed", job_id)
        else:
            if rep is None:
                log.info("job %d cancelled", job_id)
        self._current = None
        return job_id

    def run(self, *, once: bool = False, poll_s: float = 2.0, max_jobs: int | None = None, progress: Progress | None = None) -> int:
        """Loop over the queue; ``once``: stop when it is empty. Returns jobs processed.

        A store that cannot be reached (a PostgreSQL restart) is waited for, up to
        :attr:`outage_s` in a row; the job it interrupted is resumed where its stored pairs end
        (pair results are idempotent per pair, and nothing of an unfinished write was committed)."""
        n, resume, outage_since = 0, None, None
        while max_jobs is None or n < max_jobs:
            try:
                job_id = self.run_one(progress, job_id=resume)
            except StoreUnavailableError as e:
                outage_since = outage_since or time.monotonic()
                if time.monotonic() - outage_since > self.outage_s:
                    raise
                log.warning("worker %s: %s; waiting for the store", self.worker_id, e)
                resume = resume if resume is not None else self._current
                time.sleep(min(poll_s, 2.0))
                continue
            outage_since, resume = None, None
            if job_id is None:
                if once:
                    break
                time.sleep(poll_s)
                continue
            n += 1
        return n
