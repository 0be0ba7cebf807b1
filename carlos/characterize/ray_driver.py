"""Characterization of many LoRAs on a Ray cluster; the driver is the only store writer.

Ray **actors** (one per GPU, or per ``cpus_per_actor`` CPUs) each load the pipeline and CLIP
once and turn *chunks* of (prompt, seed) pairs into CLIP features; a LoRA stays attached
while its actor works through that LoRA's chunks. The driver (:func:`characterize_on_ray`)
keeps the base embeddings (the store's base cache, or base chunks run first), forms every
diff itself, writes each chunk's diffs as ``ray.wait`` hands them back and finishes a job
with :meth:`Characterizer.finish` on the stored diffs, as a single-process worker does.
LoRA files reach the workers through the object store. A dead actor process is restarted
by Ray and its calls retried; an actor gone for good has its chunks re-queued. Stopped at
any point, a rerun redoes only the chunks that were in flight (README: "Many LoRAs on Ray").

**Adaptive jobs**: the driver decides when a LoRA is done, with the worker's
:class:`~carlos.characterize.adaptive_run.AdaptivePlan` (same rounds, pair order and rule on the
stored pairs): it queues one round's chunks, decides once all are stored, then queues the next
round or finishes the job (same ``provenance["adaptive"]``); a stopped job's queued chunks are
dropped and results still in flight discarded (``lora_pairs_discarded``). No speculation: no image
past the stop, at the cost of each round's tail, when the job's actor takes another LoRA's chunks
(a LoRA switch) or, with fewer LoRAs left than actors, waits (README: "Many LoRAs on Ray"). Base
images are queued with the pairs that need them.

This module is the driver; the actor side (:class:`~carlos.characterize.ray_actors.ChunkWorker`,
starting and stopping actors, :class:`~carlos.characterize.ray_actors.RayConfig`) is
:mod:`carlos.characterize.ray_actors`.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from carlos.characterize.adaptive_run import PROTOCOL as ADAPTIVE
from carlos.characterize.adaptive_run import AdaptivePlan
from carlos.characterize.engine import (
    Pair,
    Progress,
    get_protocol,
    job_prompt_set,
    lora_mismatch,
    lora_prompt,
    protocol_pairs,
    trigger_words,
)
from carlos.characterize.ray_actors import ActorSlot, RayConfig, driver_characterizer, ray_error_reason, start_actors, stop_actors
from carlos.errors import CarlosError, InvalidInputError
from carlos.files.blobs import local_copy
from carlos.store.store import Store

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    """What a run did; ``failed`` and ``skipped`` say why per job."""

    finished: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)
    lora_pairs_computed: int = 0
    lora_pairs_discarded: int = 0  # results of jobs closed meanwhile (an adaptive stop, a cancel)
    lora_pairs_already_stored: int = 0
    base_pairs_computed: int = 0
    base_pairs_cached: int = 0
    chunks_requeued: int = 0
    worker_restarts: int = 0
    actors: int = 0
    devices: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stopped: dict[int, str] = field(default_factory=dict)  # adaptive jobs: "stopped after N of 4,480 pairs: <reason>"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Chunk:
    job_id: int | None  # None: base images
    pairs: list[Pair]
    attempts: int = 0


@dataclass
class _Job:
    job: dict[str, Any]
    trigger: tuple[str, ...]  # trigger words, appended in order
    done: int
    pending: deque = field(default_factory=deque)
    lora_box: list[Any] = field(default_factory=list)  # [ObjectRef of the file's bytes]
    sha256: str = ""
    plan: AdaptivePlan | None = None  # adaptive jobs: the rounds and the stopping rule
    round_left: set[int] = field(default_factory=set)  # pair indices of the current round not stored yet


class _Driver:
    """The ray.wait loop: hands chunks to actors, writes what comes back, finishes jobs."""

    def __init__(
        self,
        store: Store,
        slots: list[ActorSlot],
        jobs: list[dict[str, Any]],
        protocol: str,
        prompt_set: str,
        config: RayConfig,
        progress: Progress | None,
        report: RunReport,
    ) -> None:
        self.store, self.slots, self.config, self.progress, self.report = store, slots, config, progress, report
        self.worker_id = config.worker_id or f"ray-driver@{socket.gethostname()}"
        self.protocol = get_protocol(protocol)
        self.pairs, self.subset = protocol_pairs(self.protocol, prompt_set)
        self.char = driver_characterizer(store, slots[0].desc, config.thumbnails)
        self.base_key = self.char.base_key()
        self.waiting = deque(int(j["job_id"]) for j in jobs)  # not opened (claimed) yet
        self.open: dict[int, _Job] = {}
        self.in_flight: dict[Any, tuple[ActorSlot, _Chunk]] = {}
        self.held: dict[int, list[tuple[Pair, np.ndarray, bytes | None]]] = {}  # LoRA results awaiting base
        self.total = sum(int(j["total"]) for j in jobs)
        self.done = sum(int(j["done"]) for j in jobs)
        self.base = store.jobs.base_embeddings(self.base_key, [(p.prompt, p.seed) for p in self.pairs])
        report.base_pairs_cached = len(self.base)
        self.base_pending: deque[_Chunk] = deque()  # queued with the first job pairs that need them
        self.base_queued: set[tuple[str, int]] = set()
        self.base_png = {
            p.index: store.jobs.base_thumbnail(self.base_key, p.prompt, p.seed)
            for p in self.pairs[: config.thumbnails]
            if (p.prompt, p.seed) in self.base
        }

    # -- jobs ----------------------------------------------------------------------------------
    def _open(self, job_id: int) -> _Job | None:
        """Claim a job and plan its missing pairs; None if there is nothing to run."""
        import ray

        job = self.store.jobs.get(job_id)
        status, holder = job["status"], job.get("worker")
        if status in ("finished", "failed", "cancelled"):
            return self._skip(job, f"{status} meanwhile")
        mine = status == "running" and holder == self.worker_id  # a previous run of this driver
        claimed = self.store.jobs.claim_next(self.worker_id, 0.0 if mine else self.config.stale_after_s, job_id)
        if claimed is None:
            return self._skip(job, f"running on worker {holder}")
        stored = self.store.jobs.done_pairs(job_id)
        self.report.lora_pairs_already_stored += len(stored)
        state = _Job(claimed, trigger_words((claimed.get("options") or {}).get("trigger")), len(stored))
        if claimed["protocol"] == ADAPTIVE:
            state.plan = AdaptivePlan(self.store, claimed, self.pairs, self.subset)
            todo = state.plan.next_pairs(stored)  # rounds stored before are decided again
            state.round_left = {p.index for p in todo}
        else:
            todo = [p for p in self.pairs if p.index not in stored]
        if not todo:
            self._finish(state)
            return None
        try:  # a blob store's file is fetched into the driver's cache (checked against the upload below)
            data = local_copy(claimed["file_path"], None, None, cache=self.store.path.parent / "cache").read_bytes()
        except (OSError, CarlosError) as err:
            self._fail(state, f"LoRA file unreadable on the driver: {err}")
            return None
        state.sha256 = hashlib.sha256(data).hexdigest()  # the actors re-check these bytes before loading them
        expected = (claimed.get("options") or {}).get("sha256") or state.sha256
        if state.sha256 != expected:
            self._fail(state, lora_mismatch(claimed["file_path"], expected, state.sha256))
            return None
        state.lora_box = [ray.put(data)]
        self.open[job_id] = state
        self._queue(state, todo)
        return state

    def _queue(self, state: _Job, todo: list[Pair]) -> None:
        """Queue chunks of ``todo`` for the job, and base chunks for those without base images."""
        n = self.config.chunk_pairs
        base = [p for p in todo if (p.prompt, p.seed) not in self.base and (p.prompt, p.seed) not in self.base_queued]
        self.base_queued.update((p.prompt, p.seed) for p in base)
        self.base_pending.extend(_Chunk(None, base[i : i + n]) for i in range(0, len(base), n))
        state.pending.extend(_Chunk(int(state.job["job_id"]), todo[i : i + n]) for i in range(0, len(todo), n))

    def _round_done(self, state: _Job, plan: AdaptivePlan) -> None:
        """Every pair of an adaptive job's round is stored: decide, then go on or finish."""
        plan.look()
        todo = plan.next_pairs(self.store.jobs.done_pairs(int(state.job["job_id"])))
        state.round_left = {p.index for p in todo}
        if todo:
            self._queue(state, todo)
        else:
            self._finish(state)

    def _skip(self, job: dict[str, Any], why: str) -> None:
        self.report.skipped[int(job["job_id"])] = why
        self.total -= int(job["total"]) - int(job["done"])
        log.warning("job %s skipped: %s", job["job_id"], why)

    def _close(self, state: _Job) -> None:
        self.open.pop(int(state.job["job_id"]), None)
        self.held.pop(int(state.job["job_id"]), None)
        state.pending.clear()
        state.lora_box.clear()  # frees the file's bytes in the object store

    def _finish(self, state: _Job) -> None:
        job_id = int(state.job["job_id"])
        try:
            adaptive = None if state.plan is None else state.plan.provenance()
            self.char.finish(state.job, self.subset, self.protocol, state.trigger, adaptive=adaptive)
        except CarlosError as err:
            self._fail(state, str(err))
            return
        self._close(state)  # an adaptive stop: its queued chunks are dropped, those in flight discarded
        self.report.finished.append(job_id)
        if adaptive is not None:
            self.report.stopped[job_id] = adaptive["message"]
            self.total -= int(state.job["total"]) - state.done  # the pairs past the stop are not made
            if self.progress:
                self.progress(self.done, self.total)
        log.info("job %d finished%s", job_id, f": {adaptive['message']}" if adaptive else "")

    def _fail(self, state: _Job, why: str) -> None:
        job_id = int(state.job["job_id"])
        self.store.jobs.set_status(job_id, "failed", why)
        self.report.failed[job_id] = why
        self.total -= int(state.job["total"]) - state.done
        self._close(state)
        log.error("job %d failed: %s", job_id, why)

    # -- dispatch ------------------------------------------------------------------------------
    def _next_chunk(self, slot: ActorSlot) -> _Chunk | None:
        if self.base_pending:
            return self.base_pending.popleft()
        state = self.open.get(slot.current_job) if slot.current_job is not None else None
        while (state is None or not state.pending) and self.waiting and self._room():
            state = self._open(self.waiting.popleft())  # a LoRA of its own for every actor
        if self.base_pending:  # the job just opened needs base images first
            return self.base_pending.popleft()
        if state is None or not state.pending:  # help the job with the most left
            state = max((s for s in self.open.values() if s.pending), key=lambda s: len(s.pending), default=None)
        if state is None:
            return None
        slot.current_job = int(state.job["job_id"])
        return state.pending.popleft()

    def _room(self) -> bool:
        """Open a job only while fewer open jobs have chunks queued than actors are alive."""
        return sum(1 for s in self.open.values() if s.pending) < sum(1 for s in self.slots if s.alive)

    def _submit(self, slot: ActorSlot, chunk: _Chunk) -> None:
        if chunk.job_id is None:
            prompts, lora, thumbs = [p.prompt for p in chunk.pairs], None, [True] * len(chunk.pairs)
        else:
            state = self.open[chunk.job_id]
            prompts = [lora_prompt(p.prompt, state.trigger) for p in chunk.pairs]
            lora = (state.sha256, state.lora_box)
            thumbs = [p.index < self.config.thumbnails for p in chunk.pairs]
        ref = slot.actor.features.remote(prompts, [p.seed for p in chunk.pairs], lora, thumbs)
        self.in_flight[ref] = (slot, chunk)
        slot.in_flight += 1

    def _fill(self) -> None:
        for slot in self.slots:
            while slot.alive and slot.in_flight < self.config.in_flight_per_actor:
                chunk = self._next_chunk(slot)
                if chunk is None:
                    return
                self._submit(slot, chunk)

    # -- results -------------------------------------------------------------------------------
    def _requeue(self, chunk: _Chunk, why: str) -> None:
        chunk.attempts += 1
        self.report.chunks_requeued += 1
        if chunk.job_id is None:
            if chunk.attempts >= self.config.max_chunk_attempts:
                raise CarlosError(f"base images could not be made: {why}")
            self.base_pending.appendleft(chunk)
        elif chunk.job_id in self.open:
            state = self.open[chunk.job_id]
            if chunk.attempts >= self.config.max_chunk_attempts:
                self._fail(state, f"workers kept dying on this LoRA: {why}")
            else:
                state.pending.appendleft(chunk)

    def _receive(self, ref: Any) -> None:
        import ray

        slot, chunk = self.in_flight.pop(ref)
        slot.in_flight -= 1
        try:
            feats, pngs, pid = ray.get(ref)
        except ray.exceptions.RayTaskError as err:  # the code raised: a bad LoRA, out of memory...
            if chunk.job_id is None:
                raise CarlosError(f"base images failed on {slot.desc['where']}: {ray_error_reason(err)}") from err
            if chunk.job_id in self.open:
                self._fail(self.open[chunk.job_id], ray_error_reason(err))
            return
        except ray.exceptions.RayError as err:  # a process died again and again, or for good
            gone = isinstance(err, ray.exceptions.RayActorError) and not isinstance(
                err, ray.exceptions.ActorUnavailableError
            )  # unavailable: restarting, usable again
            if gone and slot.alive:
                slot.alive = False
                log.warning("Ray worker %s lost: %s", slot.desc["where"], ray_error_reason(err))
            self._requeue(chunk, ray_error_reason(err))
            if not any(s.alive for s in self.slots):
                raise CarlosError(f"every Ray worker died; last error: {ray_error_reason(err)}") from err
            return
        if slot.pid is not None and pid != slot.pid:
            self.report.worker_restarts += 1
            log.warning("Ray worker %s was restarted (pid %s -> %s)", slot.desc["where"], slot.pid, pid)
        slot.pid = pid
        items = list(zip(chunk.pairs, feats, pngs))
        if chunk.job_id is None:
            self._store_base(items)
        elif chunk.job_id in self.open:
            self.report.lora_pairs_computed += len(items)
            self._store_lora(chunk.job_id, items)
        else:  # its job stopped (adaptive), was cancelled or failed meanwhile: never stored
            self.report.lora_pairs_discarded += len(items)

    def _store_base(self, items: list[tuple[Pair, np.ndarray, bytes | None]]) -> None:
        self.store.jobs.put_base_embeddings(self.base_key, [(p.prompt, p.seed, f, png) for p, f, png in items])
        for p, f, png in items:
            self.base[(p.prompt, p.seed)] = f
            if p.index < self.config.thumbnails:
                self.base_png[p.index] = png
        self.report.base_pairs_computed += len(items)
        for job_id in list(self.held):
            self._store_lora(job_id, self.held.pop(job_id))

    def _store_lora(self, job_id: int, items: list[tuple[Pair, np.ndarray, bytes | None]]) -> None:
        ready = [it for it in items if (it[0].prompt, it[0].seed) in self.base]
        if len(ready) < len(items):  # its base images are still being made
            self.held.setdefault(job_id, []).extend(it for it in items if (it[0].prompt, it[0].seed) not in self.base)
        if not ready:
            return
        rows = [
            {
                "pair_index": p.index,
                "prompt": p.prompt,
                "category": p.category,
                "seed": p.seed,
                "diff": f.astype(np.float64) - self.base[(p.prompt, p.seed)],
            }
            for p, f, _ in ready
        ]
        thumbs = [(p.index, self.base_png.get(p.index), png) for p, _, png in ready if png is not None]
        with self.store.transaction():
            n_done = self.store.jobs.add_pair_results(job_id, rows)
            if thumbs:
                self.store.jobs.put_thumbnails(job_id, thumbs)
        state = self.open[job_id]
        self.done += n_done - state.done
        state.done = n_done
        if self.progress:
            self.progress(self.done, self.total)
        if state.plan is not None:
            state.round_left.difference_update(p.index for p, _, _ in ready)
            if not state.round_left:
                self._round_done(state, state.plan)
        elif n_done >= int(state.job["total"]):
            self._finish(state)

    # -- loop ----------------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        for job_id, state in list(self.open.items()):
            status = self.store.jobs.heartbeat(job_id, self.worker_id)
            if status != "running":  # cancelled from the dashboard or `jobs --cancel`
                self.report.skipped[job_id] = status
                self.total -= int(state.job["total"]) - state.done
                self._close(state)

    def run(self) -> None:
        import ray

        if self.progress:
            self.progress(self.done, self.total)
        beat = time.monotonic()
        while True:
            self._fill()
            if not self.in_flight:
                break
            ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=self.config.heartbeat_s)
            for ref in ready:
                self._receive(ref)
            if time.monotonic() - beat >= self.config.heartbeat_s:
                self._heartbeat()
                beat = time.monotonic()
        assert not self.open and not self.held, "work left with nothing in flight"

    def release(self) -> None:
        """Give unfinished claimed jobs back to the queue (a rerun or a worker resumes them)."""
        for job_id, state in list(self.open.items()):
            self.store.jobs.set_status(job_id, "queued")
            self._close(state)


def characterize_on_ray(
    store: Store,
    job_ids: list[int],
    *,
    config: RayConfig | None = None,
    progress: Progress | None = None,
    backend_factory: Callable | None = None,
    clip_factory: Callable | None = None,
) -> RunReport:
    """Run queued jobs (one backend, protocol and prompt set) on the connected Ray cluster (``ray.init`` first).

    Finished jobs are skipped, stored pairs are not recomputed; stopping at any point (an
    exception, Ctrl-C, a killed driver) loses only the chunks in flight.
    """
    import ray

    if not ray.is_initialized():
        raise InvalidInputError("connect to Ray first: ray.init() or ray.init(address=...)")
    config = config or RayConfig()
    t0 = time.perf_counter()
    report = RunReport()
    jobs = []
    with store.session():  # one connection for the whole list
        found = [(job_id, store.jobs.get(job_id)) for job_id in dict.fromkeys(int(j) for j in job_ids)]
    for job_id, job in found:
        if job is None:
            raise InvalidInputError(f"no job {job_id} in {store.where}")
        if job["status"] in ("finished", "failed", "cancelled"):
            report.skipped[job_id] = f"already {job['status']}"
        else:
            jobs.append(job)
    kinds = {(j["backend"], j["protocol"], job_prompt_set(j.get("options"))) for j in jobs}
    if len(kinds) > 1:
        raise InvalidInputError(f"one backend, protocol and prompt set per run, got {sorted(kinds)}")
    if not jobs:
        return report
    ((backend, protocol, prompt_set),) = kinds
    slots = start_actors(config, backend, protocol, backend_factory, clip_factory)
    report.actors, report.devices = len(slots), [s.desc["where"] for s in slots]
    driver = None
    try:
        driver = _Driver(store, slots, jobs, protocol, prompt_set, config, progress, report)
        driver.run()
    finally:
        if driver is not None:
            driver.release()
        stop_actors(slots)
        report.seconds = time.perf_counter() - t0
    return report
