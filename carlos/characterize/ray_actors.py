"""The Ray actor side of distributed characterization: the workers and their lifecycle.

:mod:`carlos.characterize.ray_driver` is the driver (the ``ray.wait`` loop, the only store
writer); this module holds what it runs on the cluster and how: :class:`ChunkWorker`,
the body of each actor (one loaded pipeline + CLIP turning chunks of (prompt, seed)
pairs into CLIP features), :func:`start_actors` / :func:`stop_actors`, the
:class:`RayConfig` that sizes them, and the driver-side stand-in for the models a
worker describes (:func:`driver_characterizer`). Ray ships :class:`ChunkWorker` to the
workers by reference, as ``carlos.characterize.ray_actors.ChunkWorker``: this module must
stay importable on every node, and it never imports the driver.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from carlos.characterize.engine import CLIP_FOR_BACKEND, Characterizer, png_thumbnail, verify_lora_file
from carlos.errors import CarlosError, InvalidInputError
from carlos.store.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayConfig:
    """How the work is spread over the cluster."""

    actors: int | None = None  # default: one per GPU, else one per cpus_per_actor CPUs
    cpus_per_actor: float = 1.0  # CPUs reserved per actor (and torch threads on CPU)
    use_gpus: bool | None = None  # None: one GPU per actor when the cluster has GPUs
    chunk_pairs: int = 8  # pairs per work item (one GPU batch); smaller: less lost on a crash
    in_flight_per_actor: int = 2  # queued at each actor, so it never waits for the driver
    max_restarts: int = 10  # Ray restarts of an actor whose process died (pipeline reloaded)
    max_task_retries: int = 2  # Ray retries of the calls in flight at a death
    max_chunk_attempts: int = 3  # then the driver re-queues; a chunk failing this often fails its job
    stale_after_s: float = 120.0  # take over jobs of other workers silent this long
    heartbeat_s: float = 15.0  # how often open jobs' heartbeats are refreshed
    thumbnails: int = 4  # image pairs kept per job for the dashboard
    worker_id: str | None = None  # default ray-driver@<host>: a restarted driver takes its jobs back
    start_timeout_s: float = 900.0  # for an actor to load its pipeline (or be placed at all)

    def __post_init__(self) -> None:
        for name in ("actors", "chunk_pairs", "in_flight_per_actor", "max_chunk_attempts", "cpus_per_actor"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InvalidInputError(f"{name} must be > 0, got {value!r}")


class ChunkWorker:
    """Body of a Ray actor: one loaded pipeline + CLIP turning chunks into CLIP features."""

    def __init__(
        self, backend: str, protocol: str, backend_factory: Callable | None, clip_factory: Callable | None, cpu_threads: int | None
    ) -> None:
        if cpu_threads:  # a CPU actor must not wander onto a GPU of its node that Ray gave another
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        import torch
        from transformers.utils import logging as transformers_logging

        from carlos.characterize import jobs

        transformers_logging.disable_progress_bar()  # one bar per LoRA load would flood the driver's log
        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        self.backend = (backend_factory or jobs.default_backend_factory)(backend, protocol)
        self.clip = (clip_factory or jobs.default_clip_factory)(CLIP_FOR_BACKEND[jobs.check_backend(backend)])
        self.active_sha: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "settings": self.backend.settings_dict(),
            "backend_id": self.backend.backend_id,
            "embedder_id": self.clip.embedder_id,
            "weights_source": getattr(self.clip, "weights_source", None),
            "where": f"{socket.gethostname()}:{os.getpid()}:{getattr(self.backend, 'device', '?')}",
        }

    def features(
        self, prompts: list[str], seeds: list[int], lora: tuple[str, list] | None, thumbs: list[bool]
    ) -> tuple[np.ndarray, list[bytes | None], int]:
        """CLIP features of base images (``lora=None``) or of the LoRA's images, PNG
        thumbnails where asked, and this process's id (lets the driver count restarts)."""
        if lora is None:
            images = self.backend.generate(prompts, seeds, base=True)
        else:
            self._attach(*lora)
            images = self.backend.generate(prompts, seeds)
        feats = np.asarray(self.clip.image_features(images), dtype=np.float32)
        return feats, [png_thumbnail(im) if t else None for im, t in zip(images, thumbs)], os.getpid()

    def _attach(self, sha256: str, box: list[Any]) -> None:
        """Make the LoRA ``sha256`` the active adapter (``box`` holds its bytes' ObjectRef)."""
        if self.active_sha == sha256 and getattr(self.backend, "active_lora", None) is not None:
            return
        import ray

        data = ray.get(box[0])
        self.active_sha = None
        fd, tmp = tempfile.mkstemp(prefix="carlos-lora-", suffix=".safetensors")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            del data
            verify_lora_file(tmp, sha256, where=socket.gethostname())  # the very file the backend loads
            self.backend.load_lora(tmp)  # the adapter is in memory once this returns
        finally:
            os.unlink(tmp)
        self.active_sha = sha256


def driver_characterizer(store: Store, desc: dict[str, Any], thumbnails: int = 4) -> Characterizer:
    """A driver-side Characterizer (no models) for base_key() and finish()."""
    facts = _Described(desc)
    return Characterizer(store, facts, facts, thumbnails=thumbnails)


class _Described:
    """The backend/CLIP facts Characterizer.base_key and .finish read, as a worker reported them."""

    def __init__(self, desc: dict[str, Any]) -> None:
        self._settings = dict(desc["settings"])
        self.backend_id = desc["backend_id"]
        self.embedder_id = desc["embedder_id"]
        self.weights_source = desc["weights_source"]

    def settings_dict(self) -> dict[str, Any]:
        return dict(self._settings)


@dataclass
class ActorSlot:
    """One live actor as the driver tracks it: its self-description and what it is doing."""

    actor: Any
    desc: dict[str, Any]
    pid: int | None = None
    in_flight: int = 0
    current_job: int | None = None
    alive: bool = True


def ray_error_reason(err: BaseException) -> str:
    """The one line of a Ray error a user needs: the remote cause, not Ray's traceback dump."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"[:500]
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(err).__name__)[:500]


def start_actors(
    config: RayConfig, backend: str, protocol: str, backend_factory: Callable | None = None, clip_factory: Callable | None = None
) -> list[ActorSlot]:
    """Start the actors (each loads its pipeline), wait until they are ready, check they agree."""
    import ray

    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), float(res.get("CPU", 0))
    use_gpu = gpus > 0 if config.use_gpus is None else config.use_gpus
    if use_gpu and gpus == 0:
        raise InvalidInputError("use_gpus is set but the Ray cluster has no GPU")
    fit = gpus if use_gpu else int(cpus // config.cpus_per_actor)
    n = min(config.actors or fit, fit)
    if n < 1:
        raise InvalidInputError(
            f"the Ray cluster ({cpus:g} CPUs, {gpus} GPUs) fits no actor of {config.cpus_per_actor:g} CPUs{' + 1 GPU' if use_gpu else ''}"
        )
    if config.actors and config.actors > fit:
        log.warning("asked for %d actors; the cluster fits %d", config.actors, fit)
    remote = ray.remote(ChunkWorker).options(
        num_cpus=config.cpus_per_actor,
        num_gpus=1 if use_gpu else 0,
        max_restarts=config.max_restarts,
        max_task_retries=config.max_task_retries,
    )
    threads = None if use_gpu else max(1, int(config.cpus_per_actor))
    actors = [remote.remote(backend, protocol, backend_factory, clip_factory, threads) for _ in range(n)]
    slots, errors = [], []
    deadline = time.monotonic() + config.start_timeout_s
    for actor, ref in [(a, a.describe.remote()) for a in actors]:
        try:
            slots.append(ActorSlot(actor, ray.get(ref, timeout=max(1.0, deadline - time.monotonic()))))
        except ray.exceptions.RayError as err:  # GetTimeoutError included
            errors.append(ray_error_reason(err))
            ray.kill(actor, no_restart=True)
    if errors:
        log.warning("%d of %d Ray workers could not load the pipeline: %s", len(errors), n, errors[0])
    if not slots:
        raise CarlosError(f"no Ray worker could load the pipeline: {errors[0]}")
    if len({driver_characterizer(None, s.desc).base_key() for s in slots}) > 1:  # type: ignore[arg-type]
        stop_actors(slots)
        raise CarlosError(
            "the Ray workers would not make the same images (different weights, settings "
            f"or device types): {sorted((s.desc['where'], s.desc['backend_id']) for s in slots)}; "
            "use one kind of node per run (or --no-gpus)"
        )
    return slots


def stop_actors(slots: list[ActorSlot]) -> None:
    """Kill the actors for good (no restart): the run is over or cannot go on."""
    import ray

    for s in slots:
        ray.kill(s.actor, no_restart=True)
