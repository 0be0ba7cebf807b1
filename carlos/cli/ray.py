"""``characterize-many``: a manifest of LoRAs, characterized on Ray or in this process.

The manifest is CSV (a header row naming ``path`` and
optionally ``trigger`` and ``name``) or JSONL (one object per line with those keys);
relative paths are relative to the manifest's folder, blank lines and ``#`` lines are skipped.
``trigger`` holds the LoRA's trigger words, in order, separated by ``|`` or ``,``
(``"pcut style|paper art"``; in JSONL also a list of strings); each LoRA prompt gets
``", " + word`` for every one.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carlos.cli.common import (
    acting_user,
    add_alias,
    add_backend,
    add_identity,
    add_json,
    add_prompt_set,
    add_protocol,
    add_quiet,
    close,
    emit,
    open_store,
    progress_bar,
)
from carlos.config import DEFAULT_BACKEND, DEFAULT_PROTOCOL
from carlos.errors import CarlosError, InvalidInputError

log = logging.getLogger(__name__)

MANIFEST_FIELDS = ("path", "trigger", "name")


@dataclass(frozen=True)
class ManifestEntry:
    line: int  # 1-based line in the manifest, for messages
    path: Path
    triggers: tuple[str, ...]  # trigger words, in order
    name: str | None


def split_triggers(value: str) -> tuple[str, ...]:
    """A manifest's ``trigger`` cell as words: separated by ``|`` or ``,``, blanks dropped."""
    return tuple(w.strip() for w in re.split(r"[|,]", value) if w.strip())


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Entries of a CSV or JSONL manifest; raises InvalidInputError naming the bad line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise InvalidInputError(f"cannot read the manifest {path}: {err}") from None
    lines = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InvalidInputError(f"the manifest {path} lists no LoRA")
    records: list[tuple[int, dict[str, Any]]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson") or lines[0][1].lstrip().startswith("{"):
        for i, ln in lines:
            try:
                obj = json.loads(ln)
            except json.JSONDecodeError as err:
                raise InvalidInputError(f"{path.name} line {i}: not JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise InvalidInputError(f'{path.name} line {i}: expected an object like {{"path": ...}}')
            records.append((i, obj))
    else:
        rows = list(csv.reader([ln for _, ln in lines]))
        header = [h.strip().lower() for h in rows[0]]
        if "path" not in header:
            raise InvalidInputError(
                f"{path.name}: the CSV needs a header row with a 'path' column (and optionally 'trigger', 'name'); got {rows[0]}"
            )
        for (i, _), row in zip(lines[1:], rows[1:]):
            records.append((i, {h: v for h, v in zip(header, row)}))
    entries = []
    for i, rec in records:
        raw = rec.get("path")
        if not isinstance(raw, str) or not raw.strip():
            raise InvalidInputError(f"{path.name} line {i}: no 'path'")
        file = Path(raw.strip()).expanduser()
        name = rec.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidInputError(f"{path.name} line {i}: 'name' must be text")
        trig = rec.get("trigger")
        if isinstance(trig, list) and all(isinstance(w, str) for w in trig):
            words = tuple(w.strip() for w in trig if w.strip())
        elif trig is None or isinstance(trig, str):
            words = split_triggers(trig or "")
        else:
            raise InvalidInputError(f"{path.name} line {i}: 'trigger' must be text (words separated by | or ,) or a list of words")
        entries.append(
            ManifestEntry(i, file if file.is_absolute() else path.parent / file, words, name.strip() if name and name.strip() else None)
        )
    return entries


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast on a host:port nobody listens on (ray.init would retry for many minutes)."""
    import socket

    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # 'auto', ray://...: Ray resolves those itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConnectionError(f"nothing answers at {address} ({err})") from None


def _run_ray(args: argparse.Namespace, store: Any, job_ids: list[int], update: Any) -> dict[str, Any]:
    import ray

    from carlos.characterize.ray_actors import RayConfig
    from carlos.characterize.ray_driver import characterize_on_ray

    config = RayConfig(
        actors=args.actors,
        cpus_per_actor=args.cpus_per_actor,
        use_gpus=False if args.no_gpus else None,
        chunk_pairs=args.chunk_pairs,
        stale_after_s=args.stale_after,
    )
    started = not ray.is_initialized()  # an already connected session (tests, notebooks) is reused
    if started:
        quiet = dict(logging_level=logging.WARNING, log_to_driver=True)
        try:
            if args.ray == "local":
                ray.init(address="local", num_cpus=args.num_cpus or os.cpu_count(), include_dashboard=False, **quiet)
            else:
                _check_reachable(args.ray)
                ray.init(address=args.ray, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = "start a local Ray cluster" if args.ray == "local" else f"reach the Ray cluster at {args.ray}"
            raise CarlosError(
                f"could not {where}: {err}; on the head node run `ray start --head`, then pass its address (host:6379) to --ray"
            ) from err
    try:
        return characterize_on_ray(store, job_ids, config=config, progress=update).to_dict()
    finally:
        if started:
            ray.shutdown()


def _characterize_many(args: argparse.Namespace) -> int:
    from carlos.characterize import jobs
    from carlos.review.access import authorize, resolve_policy

    entries = read_manifest(args.manifest)
    store = open_store(args)
    user = acting_user(args)
    policy = resolve_policy(user.secrets_files)  # read once; refused -> exit 3 before any file is read
    authorize(user, "upload LoRAs for characterization", policy)
    submitted, rejected = [], []
    for e in entries:
        try:
            sub = jobs.submit(
                store,
                e.path,
                backend=args.backend,
                protocol=args.protocol,
                trigger=list(e.triggers),
                name=e.name,
                prompt_set=args.prompt_set,
                user=user,
                policy=policy,
            )
        except (CarlosError, OSError) as err:
            rejected.append({"line": e.line, "path": str(e.path), "error": str(err)})
            log.warning("manifest line %d (%s) rejected: %s", e.line, e.path.name, err)
            continue
        submitted.append((e, sub))
    job_ids = list(dict.fromkeys(sub.job_id for _, sub in submitted))
    if args.backend == "tiny":
        print(
            "note: the tiny backend has random weights; its numbers demonstrate the flow and mean nothing about the LoRAs", file=sys.stderr
        )
    run: dict[str, Any] | None = None
    if job_ids and not args.submit_only:
        bar, update = progress_bar("pairs", unit="pair", disabled=args.quiet)
        try:
            if args.ray is not None:
                run = _run_ray(args, store, job_ids, update)
            else:
                worker = jobs.Worker(store, stale_after_s=args.stale_after, chunk_pairs=args.chunk_pairs)
                for job_id in job_ids:
                    if store.jobs.get(job_id)["status"] != "finished":
                        worker.run_one(job_id=job_id)
        finally:
            close(bar)
    out = []
    for e, sub in submitted:
        job = store.jobs.get(sub.job_id)
        row = {
            "line": e.line,
            "path": str(e.path),
            "lora_id": sub.lora_id,
            "job_id": sub.job_id,
            "status": job["status"],
            "error": job["error"],
            "done": int(job["done"]),
            "total": int(job["total"]),
        }
        reps = store.reps.of(sub.lora_id)
        rep = next((r for r in reps if r.provenance.get("job_id") == sub.job_id), None)
        if rep is not None:
            row.update(strength=rep.strength, consistency=rep.consistency, embedder=rep.embedder)
        out.append(row)
    lines = [
        f"{r['job_id']:>5}  {r['status']:9s} {r['done']}/{r['total']}  "
        + (f"Str {r['strength']:.4f} Cons {r['consistency']:.4f}  " if "strength" in r else "")
        + f"{Path(r['path']).name}"
        + (f"  ({r['error']})" if r["error"] else "")
        for r in out
    ]
    lines += [f"  rejected line {r['line']} {r['path']}: {r['error']}" for r in rejected]
    finished = sum(r["status"] == "finished" for r in out)
    lines.append(f"{finished} of {len(entries)} LoRAs characterized, {len(rejected)} rejected")
    emit(args, {"submitted": out, "rejected": rejected, "run": run}, "\n".join(lines))
    return 0 if finished == len(entries) or args.submit_only and not rejected else 1


def register(sub: Any) -> None:
    """``characterize-many``."""
    p = sub.add_parser("characterize-many", help="characterize every LoRA of a manifest, on Ray (--ray) or in this process")
    p.add_argument(
        "manifest",
        help="CSV with a header (path[,trigger][,name]) or JSONL (one "
        '{"path": ..., "trigger": ..., "name": ...} per line); paths relative to the manifest; '
        "trigger: the LoRA's trigger words in order, separated by | or , (JSONL: also a list)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run on Ray: alone, start a local cluster; with an ADDRESS (head-host:6379, or auto "
        "on a node of the cluster) join that cluster. This process stays the only store writer",
    )
    add_backend(p, DEFAULT_BACKEND)
    add_protocol(p, DEFAULT_PROTOCOL)
    add_prompt_set(p, "the prompt set whose index prompts the protocol takes")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local cluster (default: all)")
    p.add_argument("--actors", type=int, help="Ray workers (default: one per GPU, else per --cpus-per-actor CPUs)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0)
    p.add_argument("--no-gpus", action="store_true", help="CPU workers even if the cluster has GPUs")
    p.add_argument("--chunk-pairs", type=int, default=8, help="pairs per work item (smaller: finer resume)")
    p.add_argument("--stale-after", type=float, default=120.0, help="take over jobs whose worker sent no heartbeat for this many seconds")
    p.add_argument("--submit-only", action="store_true", help="validate and queue; run nothing")
    add_identity(p)
    add_quiet(p)
    add_alias(p, "--no-progress", "--quiet", "quiet", flag=True)
    add_json(p)
    p.set_defaults(func=_characterize_many)
