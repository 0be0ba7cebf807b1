"""CLI commands for retrieval (search); registered into :mod:`carlos.cli.main`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from carlos.cli.main import _emit, _hits_text, add_json, add_threshold_options, command, open_store, thresholds_from
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
    _emit(args, result.to_dict(), _hits_text(result))
    return 0


@command
def _register_search(sub: Any) -> None:
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
    p.add_argument("--clip-model", default="ViT-B-32/openai", help="CLIP registry name")
    p.add_argument("--clip-checkpoint", help="path to the CLIP weights file")
    p.add_argument("--text-model", help="sentence-transformers model name or folder")
    add_threshold_options(p)
    add_json(p)
    p.set_defaults(func=_search)


# -- characterization ---------------------------------------------------------------------------
def _progress_bar(desc: str):  # noqa: ANN202
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="pair", dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


def _characterize(args: argparse.Namespace) -> int:
    from pathlib import Path

    from carlos.characterize import jobs

    store = open_store(args)
    sub = jobs.submit(store, Path(args.file), backend=args.backend, protocol=args.profile, trigger=args.trigger, requested_by="cli")
    if args.backend == "tiny":
        print(
            "note: the tiny backend has random weights; its numbers demonstrate the flow and mean nothing about the LoRA", file=sys.stderr
        )
    job = store.get_job(sub.job_id)
    if job["status"] != "finished":
        bar, update = _progress_bar(f"job {sub.job_id}")
        worker = jobs.Worker(store, worker_id=f"cli:{sub.job_id}")
        worker.run_one(progress=update, job_id=sub.job_id)
        bar.close()
        job = store.get_job(sub.job_id)
    if job["status"] != "finished":
        from carlos.errors import CarlosError

        raise CarlosError(f"job {sub.job_id} {job['status']}: {job['error'] or 'see the worker log'}")
    rep = next(r for r in store.representations_of(sub.lora_id) if r.provenance.get("job_id") == sub.job_id)
    out = {
        "job_id": sub.job_id,
        "lora_id": sub.lora_id,
        "embedder": rep.embedder,
        "strength": rep.strength,
        "consistency": rep.consistency,
        "n_samples": rep.n_samples,
        "provenance": rep.provenance,
        "file": sub.report.to_dict(),
        "reused_existing_job": sub.duplicate_of_job is not None,
    }
    _emit(
        args,
        out,
        f"{sub.lora_id} [{rep.embedder}]: Strength {rep.strength:.4f}, "
        f"Consistency {rep.consistency:.4f} over {rep.n_samples} pairs (job {sub.job_id})",
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    from carlos.characterize import jobs

    worker = jobs.Worker(open_store(args), stale_after_s=args.stale_after, chunk_pairs=args.chunk_pairs)
    n = worker.run(once=args.once, poll_s=args.poll)
    print(f"processed {n} job(s)", file=sys.stderr)
    return 0


def _jobs(args: argparse.Namespace) -> int:
    store = open_store(args)
    if args.cancel is not None:
        ok = store.cancel_job(args.cancel)
        print(f"job {args.cancel} {'cancelled' if ok else 'was not queued or running'}")
        return 0 if ok else 2
    df = store.jobs(status=args.status, limit=args.limit)
    cols = ["job_id", "lora_id", "backend", "protocol", "status", "done", "total", "error"]
    _emit(args, df[cols].to_dict("records"), df[cols].to_string(index=False) if len(df) else "no jobs")
    return 0


def _make_test_lora(args: argparse.Namespace) -> int:
    from carlos.files.testing import make_test_lora

    make_test_lora(args.out, seed=args.seed, layout=args.layout, zero=args.zero)
    print(f"wrote {args.out} (a {args.layout} LoRA for the tiny backend)")
    return 0


@command
def _register_characterize(sub: Any) -> None:
    from carlos.characterize.engine import CLIP_FOR_BACKEND, PROTOCOLS

    p = sub.add_parser("characterize", help="characterize one .safetensors LoRA in the foreground")
    p.add_argument("file", help="the LoRA (.safetensors only)")
    p.add_argument(
        "--backend",
        choices=list(CLIP_FOR_BACKEND),
        default="tiny",
        help="tiny: local random-weight demo pipeline; sdxl: real SDXL base 1.0",
    )
    p.add_argument(
        "--profile", choices=list(PROTOCOLS), default="smoke", help="; ".join(f"{k}: {v.description}" for k, v in PROTOCOLS.items())
    )
    p.add_argument("--trigger", help="trigger words appended to the LoRA prompts")
    add_json(p)
    p.set_defaults(func=_characterize)

    p = sub.add_parser("worker", help="process queued characterization jobs")
    p.add_argument("--once", action="store_true", help="exit when the queue is empty")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between queue polls")
    p.add_argument("--stale-after", type=float, default=120.0, help="take over running jobs without a heartbeat for this many seconds")
    p.add_argument("--chunk-pairs", type=int, default=8, help="pairs generated and stored together (smaller: finer resume)")
    p.set_defaults(func=_worker)

    p = sub.add_parser("jobs", help="list or cancel characterization jobs")
    p.add_argument("--status", choices=["queued", "running", "finished", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cancel", type=int, metavar="JOB_ID", help="cancel a queued or running job")
    add_json(p)
    p.set_defaults(func=_jobs)

    p = sub.add_parser("make-test-lora", help="write a small LoRA for the tiny backend")
    p.add_argument("out", help="output .safetensors path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=["kohya", "diffusers"], default="kohya")
    p.add_argument("--zero", action="store_true", help="a LoRA with no effect (zero up-weights)")
    p.set_defaults(func=_make_test_lora)
