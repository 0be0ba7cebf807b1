"""Benchmark: concurrent dashboard sessions while a worker writes into the same store.

``python -m carlos bench load --sessions 20`` copies the store to a temporary folder, queues
characterization jobs of small test LoRAs (tiny backend, ``quick`` protocol: 70 pairs each,
written in chunks), serves the app on that copy, warms it up (one load of each kind of page on
each server process: the first behaviour search embeds the corpus's descriptions), starts
``python -m carlos worker`` on the same copy, and, once the worker has stored its first pairs,
lets ``sessions`` users (:mod:`carlos.bench.load_clients`) load search links (``?q=…``), LoRA
detail links (``?lora=…``, the LoRAs being characterized among them) and the risk, map and
review pages for ``seconds``.

The app is served by one ``streamlit run`` (``--replicas 1``, as ``make run``) or by
``--replicas N`` Streamlit processes behind HAProxy (:mod:`carlos.serving`, as ``make serve``),
the users connecting through the proxy with its affinity cookie. ``--baseline REF`` runs the same
load first against another revision of this repository (a ``git worktree`` of REF, removed after:
its own store copy, prepared by its own code, its own app and worker, served by this tree's
serving code), then against the current tree, and reports both side by side.

It reports per page kind the p50/p95/max time to result, page views per second, every error
(exception or error elements, pages without their result, refused or dropped connections,
timeouts), the lines of the servers' and the worker's logs that mention a locked database or a
traceback, the pairs the worker wrote during the window, per process (each server process, the
proxy, the worker, the clients) the cores used and the resident memory at the window's start,
end and peak (:mod:`carlos.bench.load_procs`), and which targets were met
(:func:`carlos.bench.load_report.evaluate_targets`). ``ok`` is zero errors, no locked-database
line, no traceback and, with the worker, at least one pair written during the window (on both
sides with a baseline).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from carlos.bench.common import machine_info, stamp
from carlos.bench.load_clients import LOCKED, PAGE_CHECKS, Action, chromium_sessions, plan, websocket_action, websocket_sessions
from carlos.bench.load_procs import ProcessMeter
from carlos.bench.load_report import evaluate_targets, summarize, targets_met
from carlos.config import REPO_ROOT
from carlos.errors import InvalidInputError
from carlos.serving import ServeConfig, Topology, free_port, spawn, stop, streamlit_command, wait_healthy

DEFAULT_QUERIES = ("pixel art", "anime portrait", "watercolor landscape", "cyberpunk city", "oil painting", "line art", "photorealistic")
DEFAULT_PAGES = ("risk", "map", "review")
CLIENTS = ("websocket", "chromium")
#: In the environment of the Chromium the clients start, so its CPU can be counted.
CLIENT_MARKER = f"CARLOS_LOAD_CLIENT={os.getpid()}"
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LoadBenchConfig:
    sessions: int = 20
    seconds: float = 60.0
    client: str = "websocket"
    worker: bool = True
    worker_jobs: int = 2  # queued test LoRAs; the worker runs them one after the other
    protocol: str = "quick"
    queries: tuple[str, ...] = DEFAULT_QUERIES
    n_loras: int = 40  # detail pages drawn from this many corpus LoRAs (and the uploads)
    pages: tuple[str, ...] = DEFAULT_PAGES  # pages loaded without parameters, beside search and detail
    replicas: int = 1  # Streamlit processes: 1 = one `streamlit run`; N >= 2: behind HAProxy (carlos.serving)
    timeout_s: float = 120.0  # an action without a result by then is an error
    think_s: float = 0.5  # each user pauses up to this long between loads
    port: int | None = None  # the public port (the proxy's with replicas)
    seed: int = 0
    workdir: str | None = None
    store_url: str | None = None  # a PostgreSQL server: the store copy is a new database on it (never reported)

    def __post_init__(self) -> None:
        if self.client not in CLIENTS:
            raise InvalidInputError(f"client must be one of {', '.join(CLIENTS)}, got {self.client!r}")
        if self.sessions < 1 or self.seconds <= 0 or self.worker_jobs < 1 or self.n_loras < 1 or self.timeout_s <= 0:
            raise InvalidInputError("sessions, seconds, worker_jobs, n_loras and timeout_s must be positive")
        if not 0 <= self.think_s < self.seconds:
            raise InvalidInputError(f"think_s must be >= 0 and shorter than the run, got {self.think_s!r}")
        if self.replicas < 1:
            raise InvalidInputError(f"replicas must be at least 1, got {self.replicas}")
        extra = [k for k in PAGE_CHECKS if k not in ("search", "detail")]
        if any(p not in extra for p in self.pages):
            raise InvalidInputError(f"pages must be among {', '.join(extra)}, got {', '.join(self.pages)}")


#: Run by each side's own code (``python -c``, in its tree): copies nothing, prepares the store
#: copy given; prints {"keys": [...], "job_ids": [...]}. Only long-standing library calls.
PREPARE = """
import json, sys
from pathlib import Path
import numpy as np
from carlos.characterize import jobs
from carlos.core.access import AccessPolicy, CurrentUser
from carlos.files.testing import make_test_lora
from carlos.store.catalog import load_view
from carlos.store.store import Store
a = json.loads(sys.argv[1])
root = Path(a["root"])
store = Store.open(a["db"])
ids = load_view(store).ids
rng = np.random.default_rng(a["seed"])
keys = [ids[i] for i in rng.choice(len(ids), size=min(a["n_loras"], len(ids)), replace=False)]
job_ids = []
owner, local = CurrentUser.local("load-bench"), AccessPolicy(None)  # the benchmark owns this copy
for k in range(a["worker_jobs"]):
    lora = make_test_lora(root / f"load-{k}.safetensors", seed=100 + k)
    sub = jobs.submit(store, lora, user=owner, policy=local, backend="tiny", protocol=a["protocol"], uploads_dir=root / "uploads")
    job_ids.append(int(sub.job_id))
    keys.append(sub.lora_id)
print(json.dumps({"keys": [str(k) for k in keys], "job_ids": job_ids}))
"""


def prepare_store(cfg: LoadBenchConfig, db: Path, root: Path, app_dir: Path, env: dict[str, str]) -> tuple[str, list[str], list[int]]:
    """The store copy (a file in ``root``, or a new database on ``cfg.store_url``'s server filled by
    ``store copy``), the LoRA keys of detail pages and the queued job ids, made by the code of
    ``app_dir`` (:data:`PREPARE`)."""
    if cfg.store_url:
        from carlos.store.postgres import create_database
        from carlos.store.store import Store
        from carlos.store.transfer import copy_store

        copy = create_database(cfg.store_url, f"carlos_load_{os.urandom(5).hex()}")
        if not copy_store(Store.open(db), Store.open(copy)).ok:
            raise InvalidInputError("copying the store into the PostgreSQL database did not verify")
    else:
        copy = str(root / "carlos.duckdb")
        shutil.copy(db, copy)
    args = {"db": copy, "root": str(root), "seed": cfg.seed, "n_loras": cfg.n_loras}
    args |= {"worker_jobs": cfg.worker_jobs if cfg.worker else 0, "protocol": cfg.protocol}
    done = subprocess.run(
        [sys.executable, "-c", PREPARE, json.dumps(args)], cwd=app_dir, env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise InvalidInputError(f"preparing the store copy with the code of {app_dir} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return copy, out["keys"], out["job_ids"]


@contextmanager
def worktree(ref: str) -> Iterator[tuple[Path, str]]:
    """A ``git worktree`` of ``ref`` of this repository in a temporary folder, removed after: (folder, commit)."""
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=REPO_ROOT, capture_output=True, text=True)
    if found.returncode != 0:
        raise InvalidInputError(f"--baseline {ref!r} is not a revision of {REPO_ROOT}")
    commit = found.stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="carlos-baseline-"))
    tree = tmp / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), commit], cwd=REPO_ROOT, check=True, capture_output=True)
    try:
        cache = REPO_ROOT / "data" / "cache"  # the verified downloads (the authors' wheel: prompts, tokenizer), not in git
        if cache.is_dir() and not (tree / "data" / "cache").exists():
            shutil.copytree(cache, tree / "data" / "cache", symlinks=True)
        yield tree, commit
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO_ROOT, capture_output=True)
        subprocess.run(["git", "worktree", "prune"], cwd=REPO_ROOT, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _log_findings(paths: list[Path]) -> dict[str, Any]:
    lines = [ln for p in paths if p.exists() for ln in p.read_text(errors="replace").splitlines()]
    locked = [ln for ln in lines if any(word in ln for word in LOCKED)]
    tracebacks = sum(ln.count("Traceback (most recent call last)") for ln in lines)
    return {"lines": len(lines), "locked": locked[:10], "n_locked": len(locked), "tracebacks": tracebacks}


def _warm_actions(actions: list[Action]) -> list[Action]:
    """One load of each kind of page (both retrievers of search): imports, the corpus view, BM25,
    the text model and the corpus's embeddings, the map."""
    out = [next(a for a in actions if a.kind == "search" and f"r={r}" in a.query) for r in ("bm25", "behaviour")]
    return out + [next(a for a in actions if a.kind == kind) for kind in dict.fromkeys(a.kind for a in actions) if kind != "search"]


async def _warm(servers: dict[str, str], actions: list[Action]) -> dict[str, tuple[float | None, str | None]]:
    async def one(name: str, url: str) -> list[tuple[str, tuple[float | None, str | None]]]:
        ws = url.replace("http://", "ws://") + "/_stcore/stream"
        return [(f"{name} {a.page}?{a.query}", await websocket_action(ws, a, 600.0)) for a in _warm_actions(actions)]

    done = await asyncio.gather(*(one(n, u) for n, u in servers.items()))
    return dict(pair for pairs in done for pair in pairs)


def run_load_bench(cfg: LoadBenchConfig, db: Path, *, baseline: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run the benchmark on copies of the store at ``db`` (see the module docstring); with
    ``baseline``, first against that revision, and the current tree's result carries it."""
    if cfg.store_url and baseline:
        raise InvalidInputError("--baseline runs another revision on the embedded store only; run --store without it")
    root = Path(cfg.workdir) if cfg.workdir else Path(tempfile.mkdtemp(prefix="carlos-bench-load-"))
    root.mkdir(parents=True, exist_ok=True)
    if baseline is None:
        result = run_side(cfg, Path(db), root, REPO_ROOT, progress)
    else:
        total = int(cfg.seconds) * 2
        with worktree(baseline) as (tree, commit):
            shifted = (lambda d, _t: progress(d, total)) if progress else None
            base = run_side(cfg, Path(db), root / "baseline", tree, shifted)
        base |= {"ref": baseline, "commit": commit}
        shifted = (lambda d, _t: progress(int(cfg.seconds) + d, total)) if progress else None
        result = run_side(cfg, Path(db), root / "current", REPO_ROOT, shifted)
        result["baseline"] = base
        result["ok"] = bool(result["ok"] and base["ok"])
    result["workdir"] = str(root)
    if not cfg.workdir and result["ok"]:
        shutil.rmtree(root, ignore_errors=True)  # kept when something went wrong: the logs are there
    return result


def run_side(cfg: LoadBenchConfig, db: Path, root: Path, app_dir: Path, progress: Progress | None = None) -> dict[str, Any]:
    """One run of the load against the app of ``app_dir`` (this repository or a worktree)."""
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CARLOS_REVIEWER": "load-bench", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(app_dir)}
    env.pop("CARLOS_REVIEWERS", None)
    env.pop("CARLOS_STORE", None)  # the copy, never the store the command was started on
    copy, keys, job_ids = prepare_store(cfg, db, root, app_dir, env)
    env["CARLOS_STORE" if cfg.store_url else "CARLOS_DB"] = copy
    try:
        return _run_prepared(cfg, root, app_dir, env, copy, keys, job_ids, progress)
    finally:
        if cfg.store_url:  # the scratch database goes; a file copy stays with the logs
            from carlos.store.postgres import drop_database

            drop_database(cfg.store_url, urlsplit(copy).path.strip("/"))


def _run_prepared(
    cfg: LoadBenchConfig,
    root: Path,
    app_dir: Path,
    env: dict[str, str],
    copy: str,
    keys: list[str],
    job_ids: list[int],
    progress: Progress | None,
) -> dict[str, Any]:
    from carlos.store.postgres import redact
    from carlos.store.store import Store

    actions = plan(cfg.queries, keys, pages=cfg.pages)
    port = cfg.port or free_port()
    worker_log = root / "worker.log"
    server = worker = topology = None
    try:
        if cfg.replicas == 1:
            logs = [root / "server.log"]
            server = spawn(streamlit_command("streamlit_app.py", port), logs[0], env, cwd=app_dir)
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, server, logs[0], timeout_s=300.0)
            backends, roots = {"server": base}, {"server": server.pid}
        else:
            topology = Topology(ServeConfig(workers=cfg.replicas, port=port, app_dir=app_dir, run_dir=root / "serve", env=env)).start()
            base, logs = topology.url, [r.log for r in topology.replicas]
            backends, roots = {r.name: r.url for r in topology.replicas}, topology.pids()
        warm = asyncio.run(_warm(backends, actions))  # each process directly: each has its own caches
        store = Store(copy)  # job progress only; the store is the prepared copy (no migration by this tree's code)
        running_after = None
        if cfg.worker:
            t0 = time.perf_counter()
            command = [sys.executable, "-m", "carlos", *(() if cfg.store_url else ("--db", copy)), "worker", "--poll", "0.5"]
            worker = spawn(command, worker_log, env, cwd=app_dir)
            roots["worker"] = worker.pid
            while time.perf_counter() - t0 < 300 and not any(int(store.jobs.get(j)["done"]) > 0 for j in job_ids):
                time.sleep(0.5)  # until its first chunk of pairs is stored: the window then overlaps its writes
            running_after = time.perf_counter() - t0
        meter = ProcessMeter(roots, client_marker=CLIENT_MARKER if cfg.client == "chromium" else None)
        pairs: list[int] = []
        logs_out, window_s = asyncio.run(_window(cfg, actions, base, store, job_ids, meter, pairs, progress))
    finally:
        stop(worker, timeout_s=30.0)
        stop(server, timeout_s=30.0)
        if topology is not None:
            topology.stop(clean=False)  # its logs stay in root/serve
    outcomes = [o for log in logs_out for o in log.outcomes]
    procs = meter.report()
    servers = [r for r in procs if r == "server" or (r.startswith("s") and r[1:].isdigit())]
    jobs_end = [store.jobs.get(j) for j in job_ids]
    result: dict[str, Any] = {
        "benchmark": "load",
        "when": stamp(),
        "machine": machine_info(),
        "config": asdict(cfg) | {"store_url": redact(cfg.store_url) if cfg.store_url else None},
        "store": "postgresql" if cfg.store_url else "duckdb",
        "app": str(app_dir),
        "warm_up_s": {k: w[0] for k, w in warm.items()},
        "warm_up_errors": [f"{k}: {w[1]}" for k, w in warm.items() if w[1]],
        "worker_running_after_s": running_after,
        **summarize(outcomes, window_s),
        "pairs_written_during_window": (pairs[-1] - pairs[0]) if pairs else 0,
        "jobs": [{"job_id": j["job_id"], "status": j["status"], "done": int(j["done"]), "total": int(j["total"])} for j in jobs_end],
        "processes": procs,
        "cores_used": {
            "server_cpu": sum(procs[r]["cores"] or 0.0 for r in servers),
            "proxy_cpu": procs["proxy"]["cores"] if "proxy" in procs else None,
            "worker_cpu": procs["worker"]["cores"] if "worker" in procs else None,
            "client_cpu": procs["clients"]["cores"],
        },
        "server_log": _log_findings(logs),
        "proxy_log": _log_findings([topology.proxy_log]) if topology else None,
        "worker_log": _log_findings([worker_log]),
        "workdir": str(root),
    }
    result["targets"] = evaluate_targets(result)
    result["targets_met"] = targets_met(result["targets"])
    result["ok"] = bool(
        result["n_errors"] == 0
        and not result["warm_up_errors"]
        and result["server_log"]["n_locked"] == 0
        and result["worker_log"]["n_locked"] == 0
        and result["server_log"]["tracebacks"] == 0
        and result["worker_log"]["tracebacks"] == 0
        and (not cfg.worker or result["pairs_written_during_window"] > 0)
    )
    return result


async def _window(
    cfg: LoadBenchConfig,
    actions: list[Action],
    base: str,
    store: Any,
    job_ids: list[int],
    meter: ProcessMeter,
    pairs: list[int],
    progress: Progress | None,
) -> tuple[Any, float]:
    """The sessions, and beside them a sampler of the worker's progress and of the processes;
    (session logs, seconds the sessions ran)."""
    done = asyncio.Event()
    ws_url = base.replace("http://", "ws://") + "/_stcore/stream"

    def sample() -> None:
        meter.sample()
        pairs.append(sum(int(store.jobs.get(j)["done"]) for j in job_ids))

    async def sampler() -> None:
        t0 = time.perf_counter()
        while not done.is_set():
            await asyncio.to_thread(sample)
            if progress:
                progress(min(int(time.perf_counter() - t0), int(cfg.seconds)), int(cfg.seconds))
            try:
                await asyncio.wait_for(done.wait(), timeout=2.0)
            except TimeoutError:
                pass
        await asyncio.to_thread(sample)

    async def clients() -> tuple[Any, float]:
        t0 = time.perf_counter()
        try:
            if cfg.client == "websocket":
                sticky = base if cfg.replicas > 1 else None  # a browser's cookie: all of one user's loads on one process
                logs = await websocket_sessions(
                    ws_url,
                    actions,
                    cfg.sessions,
                    cfg.seconds,
                    seed=cfg.seed,
                    timeout_s=cfg.timeout_s,
                    think_s=cfg.think_s,
                    sticky_base=sticky,
                )
            else:
                env = {**os.environ, CLIENT_MARKER.split("=")[0]: CLIENT_MARKER.split("=")[1]}
                logs = await chromium_sessions(
                    base, actions, cfg.sessions, cfg.seconds, seed=cfg.seed, timeout_s=cfg.timeout_s, think_s=cfg.think_s, env=env
                )
            return logs, time.perf_counter() - t0
        finally:
            done.set()

    (logs, window_s), _ = await asyncio.gather(clients(), sampler())
    return logs, window_s
