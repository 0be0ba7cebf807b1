"""Characterization commands: ``characterize`` (one file, in the foreground), ``worker``, ``jobs``, ``make-test-lora``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from carlos.cli.common import (
    acting_user,
    add_backend,
    add_identity,
    add_json,
    add_prompt_set,
    add_protocol,
    add_quiet,
    add_trigger,
    close,
    emit,
    open_store,
    progress_bar,
)
from carlos.config import DEFAULT_BACKEND, DEFAULT_PROTOCOL


def _characterize(args: argparse.Namespace) -> int:

    from carlos.characterize import fingerprints, jobs
    from carlos.characterize.results import uncertainty_of

    store = open_store(args)
    sub = jobs.submit(
        store,
        Path(args.file),
        backend=args.backend,
        protocol=args.protocol,
        trigger=args.trigger,
        prompt_set=args.prompt_set,
        user=acting_user(args),
    )
    if args.backend == "tiny":
        print(
            "note: the tiny backend has random weights; its numbers demonstrate the flow and mean nothing about the LoRA", file=sys.stderr
        )
    weights = fingerprints.weight_matches(store, sub.lora_id)  # found at upload, before any GPU work
    for m in weights if not args.json else ():
        print(f"weights: {m.text} (cosine {m.cosine:.4f})", file=sys.stderr)
    job = store.jobs.get(sub.job_id)
    if job["status"] != "finished":
        bar, update = progress_bar(f"job {sub.job_id}", unit="pair", disabled=args.quiet)
        worker = jobs.Worker(store, worker_id=f"cli:{sub.job_id}")
        worker.run_one(progress=update, job_id=sub.job_id)
        close(bar)
        job = store.jobs.get(sub.job_id)
    if job["status"] != "finished":
        from carlos.errors import CarlosError

        raise CarlosError(f"job {sub.job_id} {job['status']}: {job['error'] or 'see the worker log'}")
    rep = next(r for r in store.reps.of(sub.lora_id) if r.provenance.get("job_id") == sub.job_id)
    u = uncertainty_of(rep)  # None: a job finished before intervals were stored
    out = {
        "job_id": sub.job_id,
        "lora_id": sub.lora_id,
        "embedder": rep.embedder,
        "strength": rep.strength,
        "consistency": rep.consistency,
        "n_samples": rep.n_samples,
        "strength_se": u.strength_se if u else None,
        "strength_interval": u.to_dict()["strength_interval"] if u else None,
        "consistency_se": u.consistency_se if u else None,
        "consistency_interval": u.to_dict()["consistency_interval"] if u else None,
        "uncertainty": u.to_dict() if u else None,
        "provenance": rep.provenance,
        "file": sub.report.to_dict(),
        "reused_existing_job": sub.duplicate_of_job is not None,
        "adaptive": rep.provenance.get("adaptive"),  # protocol adaptive: pairs used, reason, message
        "weight_matches": [m.to_dict() for m in weights],  # found at upload, before any image
    }
    values = (
        f"Strength {u.strength_text()}, Consistency {u.consistency_text()}"
        if u
        else f"Strength {rep.strength:.4f}, Consistency {rep.consistency:.4f} (no interval stored)"
    )
    stopped = f"; {out['adaptive']['message']}" if out["adaptive"] else ""
    emit(args, out, f"{sub.lora_id} [{rep.embedder}]: {values} over {rep.n_samples} pairs (job {sub.job_id}){stopped}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from carlos.characterize import jobs
    from carlos.config import default_paths
    from carlos.files.blobs import open_blobs

    store = open_store(args)
    cache = Path(args.cache_dir) if args.cache_dir else store.path.parent / "cache"
    target = args.blobs or default_paths().blobs
    blobs = open_blobs(target, cache=cache) if target else None
    worker = jobs.Worker(store, stale_after_s=args.stale_after, chunk_pairs=args.chunk_pairs, blobs=blobs, cache_dir=cache)
    n = worker.run(once=args.once, poll_s=args.poll)
    if args.json:
        emit(args, {"processed_jobs": n}, "")
    else:
        print(f"processed {n} job(s)", file=sys.stderr)
    return 0


def _jobs(args: argparse.Namespace) -> int:
    store = open_store(args)
    if args.cancel is not None:
        from carlos.characterize import jobs

        ok = jobs.cancel(store, args.cancel, acting_user(args))
        print(f"job {args.cancel} {'cancelled' if ok else 'was not queued or running'}")
        return 0 if ok else 2
    df = store.jobs.recent(status=args.status, limit=args.limit)
    cols = ["job_id", "lora_id", "backend", "protocol", "status", "done", "total", "error"]
    emit(args, df[cols].to_dict("records"), df[cols].to_string(index=False) if len(df) else "no jobs")
    return 0


def _make_test_lora(args: argparse.Namespace) -> int:
    from carlos.files.testing import make_test_lora

    path = make_test_lora(args.out, seed=args.seed, layout=args.layout, zero=args.zero)
    info = {"path": str(path), "layout": args.layout, "seed": args.seed, "zero": args.zero}
    emit(args, info, f"wrote {args.out} (a {args.layout} LoRA for the tiny backend)")
    return 0


def register(sub: Any) -> None:
    """``characterize``, ``worker``, ``jobs``, ``make-test-lora``."""
    p = sub.add_parser("characterize", help="characterize one .safetensors LoRA in the foreground")
    p.add_argument("file", help="the LoRA (.safetensors only)")
    add_backend(p, DEFAULT_BACKEND)
    add_protocol(p, DEFAULT_PROTOCOL)
    add_prompt_set(p, "the prompt set whose index prompts the protocol takes")
    add_trigger(p)
    add_identity(p)
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=_characterize)

    p = sub.add_parser("worker", help="process queued characterization jobs")
    p.add_argument("--once", action="store_true", help="exit when the queue is empty")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between queue polls")
    p.add_argument("--stale-after", type=float, default=120.0, help="take over running jobs without a heartbeat for this many seconds")
    p.add_argument("--chunk-pairs", type=int, default=8, help="pairs generated and stored together (smaller: finer resume)")
    p.add_argument(
        "--blobs",
        metavar="URL",
        help="where uploads are kept: s3://bucket[/prefix][?endpoint=…] (credentials from AWS_ACCESS_KEY_ID / "
        "AWS_SECRET_ACCESS_KEY or the secrets file); default: $CARLOS_BLOBS, [carlos] blobs, else the store's folder",
    )
    p.add_argument("--cache-dir", help="where fetched uploads are kept and verified (default: the store's cache folder)")
    add_json(p)
    p.set_defaults(func=_worker)

    p = sub.add_parser("jobs", help="list or cancel characterization jobs")
    p.add_argument("--status", choices=["queued", "running", "finished", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cancel", type=int, metavar="JOB_ID", help="cancel a queued or running job (reviewers only)")
    add_identity(p)
    add_json(p)
    p.set_defaults(func=_jobs)

    p = sub.add_parser("make-test-lora", help="write a small LoRA for the tiny backend")
    p.add_argument("out", help="output .safetensors path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=["kohya", "diffusers"], default="kohya")
    p.add_argument("--zero", action="store_true", help="a LoRA with no effect (zero up-weights)")
    add_json(p)
    p.set_defaults(func=_make_test_lora)
