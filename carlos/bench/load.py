"""Benchmark: concurrent dashboard sessions while a worker writes into the same store.

``python -m carlos bench load --sessions 20`` copies the store to a temporary folder, queues
characterization jobs of small test LoRAs (tiny backend, ``quick`` protocol: 70 pairs each,
written in chunks), serves the app with ``streamlit run`` on that copy, warms it up (one
load of each kind: the first behaviour search embeds the corpus's descriptions), starts
``python -m carlos worker`` on the same copy, and, once the worker has stored its first pairs,
lets ``sessions`` users (:mod:`carlos.bench.load_clients`) load search links (``?q=…``) and
LoRA detail links (``?lora=…``, the LoRAs being characterized among them) for ``seconds``.

It reports per action the p50/p95/max time to result, every error (exception or error
elements, pages without their result, refused or dropped connections, timeouts), the
lines of the server's and the worker's logs that mention a locked database or a traceback,
the pairs the worker wrote during the window, and the CPU each side used (cores: CPU
seconds over wall seconds), which is how the client was chosen (``bench/README.md``).
``ok`` is zero errors, no locked-database line, no traceback and, with the worker, at least
one pair written during the window.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from carlos.bench.common import machine_info, machine_line, markdown_table, percentiles, stamp, text_table
from carlos.bench.load_clients import LOCKED, Action, Outcome, chromium_sessions, plan, websocket_action, websocket_sessions
from carlos.bench.serve import free_port, spawn, stop, streamlit_command, wait_healthy
from carlos.errors import InvalidInputError

DEFAULT_QUERIES = ("pixel art", "anime portrait", "watercolor landscape", "cyberpunk city", "oil painting", "line art", "photorealistic")
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
    timeout_s: float = 120.0  # an action without a result by then is an error
    think_s: float = 0.5  # each user pauses up to this long between loads
    port: int | None = None
    seed: int = 0
    workdir: str | None = None

    def __post_init__(self) -> None:
        if self.client not in CLIENTS:
            raise InvalidInputError(f"client must be one of {', '.join(CLIENTS)}, got {self.client!r}")
        if self.sessions < 1 or self.seconds <= 0 or self.worker_jobs < 1 or self.n_loras < 1 or self.timeout_s <= 0:
            raise InvalidInputError("sessions, seconds, worker_jobs, n_loras and timeout_s must be positive")
        if not 0 <= self.think_s < self.seconds:
            raise InvalidInputError(f"think_s must be >= 0 and shorter than the run, got {self.think_s!r}")


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, user + system CPU seconds) of every living process (Linux ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return out


def descendants(pid: int, procs: dict[int, tuple[int, float]] | None = None) -> set[int]:
    """A process and its living descendants."""
    procs = _processes() if procs is None else procs
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo += [c for c, (parent, _) in procs.items() if parent == p and c not in out]
    return out


def marked(marker: str) -> set[int]:
    """Processes whose environment holds ``marker`` (Chromium's renderers are re-parented away
    from the browser that started them, but they inherit its environment)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    out.add(int(entry.name))
            except OSError:
                continue
    return out


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its living descendants."""
    procs = _processes()
    return sum(procs[p][1] for p in descendants(pid, procs) if p in procs)


def _prepare(cfg: LoadBenchConfig, db: Path, root: Path) -> tuple[Path, list[str], list[int]]:
    """The store copy, the LoRA keys of detail pages and the queued job ids."""
    from carlos.characterize import jobs
    from carlos.core.access import AccessPolicy, CurrentUser
    from carlos.files.testing import make_test_lora
    from carlos.store.catalog import load_view
    from carlos.store.store import Store

    copy = root / "carlos.duckdb"
    shutil.copy(db, copy)
    store = Store.open(copy)
    ids = load_view(store).ids
    rng = np.random.default_rng(cfg.seed)
    keys = [ids[i] for i in rng.choice(len(ids), size=min(cfg.n_loras, len(ids)), replace=False)]
    job_ids = []
    if cfg.worker:
        owner, local = CurrentUser.local("load-bench"), AccessPolicy(None)  # the benchmark owns this copy
        for k in range(cfg.worker_jobs):
            lora = make_test_lora(root / f"load-{k}.safetensors", seed=100 + k)
            sub = jobs.submit(store, lora, user=owner, policy=local, backend="tiny", protocol=cfg.protocol, uploads_dir=root / "uploads")
            job_ids.append(sub.job_id)
            keys.append(sub.lora_id)
    return copy, keys, job_ids


def _log_findings(path: Path) -> dict[str, Any]:
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = text.splitlines()
    locked = [ln for ln in lines if any(word in ln for word in LOCKED)]
    return {
        "lines": len(lines),
        "locked": locked[:10],
        "n_locked": len(locked),
        "tracebacks": text.count("Traceback (most recent call last)"),
    }


def _summary(outcomes: list[Outcome]) -> dict[str, Any]:
    by_kind: dict[str, Any] = {}
    for kind in sorted({o.kind for o in outcomes}):
        done = [o.seconds for o in outcomes if o.kind == kind and o.seconds is not None]
        by_kind[kind] = {"count": sum(o.kind == kind for o in outcomes), "ok": len(done), **percentiles(done)}
    errors: dict[str, int] = {}
    for o in outcomes:
        if o.error:
            errors[f"{o.kind}: {o.error}"] = errors.get(f"{o.kind}: {o.error}", 0) + 1
    return {"actions": by_kind, "errors": errors, "n_errors": sum(errors.values())}


def run_load_bench(cfg: LoadBenchConfig, db: Path, *, progress: Progress | None = None) -> dict[str, Any]:
    """Run the benchmark on a copy of the store at ``db`` (see the module docstring)."""
    from carlos.store.store import Store

    root = Path(cfg.workdir) if cfg.workdir else Path(tempfile.mkdtemp(prefix="carlos-bench-load-"))
    root.mkdir(parents=True, exist_ok=True)
    copy, keys, job_ids = _prepare(cfg, Path(db), root)
    actions = plan(cfg.queries, keys)
    port = cfg.port or free_port()
    base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/_stcore/stream"
    env = {**os.environ, "CARLOS_DB": str(copy), "CARLOS_REVIEWER": "load-bench", "PYTHONUNBUFFERED": "1"}
    env.pop("CARLOS_REVIEWERS", None)
    server_log, worker_log = root / "server.log", root / "worker.log"
    server = worker = None
    try:
        server = spawn(streamlit_command("streamlit_app.py", port), server_log, env)
        wait_healthy(base, server, server_log, timeout_s=300.0)
        warm = {}  # first loads: imports, the corpus view, BM25, the text model and the corpus's embeddings
        for act in [next(a for a in actions if a.kind == "search" and f"r={r}" in a.query) for r in ("bm25", "behaviour")]:
            warm[act.query] = asyncio.run(websocket_action(ws_url, act, 600.0))
        warm[actions[-1].query] = asyncio.run(websocket_action(ws_url, next(a for a in actions if a.kind == "detail"), 600.0))
        store = Store.open(copy)
        running_after = None
        if cfg.worker:
            t0 = time.perf_counter()
            worker = spawn([sys.executable, "-m", "carlos", "--db", str(copy), "worker", "--poll", "0.5"], worker_log, env)
            while time.perf_counter() - t0 < 300 and not any(int(store.jobs.get(j)["done"]) > 0 for j in job_ids):
                time.sleep(0.5)  # until its first chunk of pairs is stored: the window then overlaps its writes
            running_after = time.perf_counter() - t0
        samples: list[dict[str, Any]] = []
        logs = asyncio.run(_window(cfg, actions, base, ws_url, store, job_ids, server, worker, samples, progress))
    finally:
        stop(worker, timeout_s=30.0)
        stop(server, timeout_s=30.0)
    outcomes = [o for log in logs for o in log.outcomes]
    done_pairs = [s["pairs_done"] for s in samples]
    first, last = samples[0], samples[-1]
    wall = last["t"] - first["t"]
    cores = {k: (last[k] - first[k]) / wall if wall > 0 else None for k in ("server_cpu", "worker_cpu", "client_cpu")}
    jobs_end = [store.jobs.get(j) for j in job_ids]
    result: dict[str, Any] = {
        "benchmark": "load",
        "when": stamp(),
        "machine": machine_info(),
        "config": asdict(cfg),
        "warm_up_s": {q: w[0] for q, w in warm.items()},
        "warm_up_errors": [w[1] for w in warm.values() if w[1]],
        "worker_running_after_s": running_after,
        **_summary(outcomes),
        "pairs_written_during_window": (done_pairs[-1] - done_pairs[0]) if done_pairs else 0,
        "jobs": [{"job_id": j["job_id"], "status": j["status"], "done": int(j["done"]), "total": int(j["total"])} for j in jobs_end],
        "cores_used": cores,
        "server_log": _log_findings(server_log),
        "worker_log": _log_findings(worker_log),
        "workdir": str(root),
    }
    result["ok"] = bool(
        result["n_errors"] == 0
        and not result["warm_up_errors"]
        and result["server_log"]["n_locked"] == 0
        and result["worker_log"]["n_locked"] == 0
        and result["server_log"]["tracebacks"] == 0
        and result["worker_log"]["tracebacks"] == 0
        and (not cfg.worker or result["pairs_written_during_window"] > 0)
    )
    if not cfg.workdir and result["ok"]:
        shutil.rmtree(root, ignore_errors=True)  # kept when something went wrong: the logs are there
    return result


async def _window(
    cfg: LoadBenchConfig,
    actions: list[Action],
    base: str,
    ws_url: str,
    store: Any,
    job_ids: list[int],
    server: subprocess.Popen,
    worker: subprocess.Popen | None,
    samples: list[dict[str, Any]],
    progress: Progress | None,
) -> Any:
    """The sessions, and beside them a sampler of the worker's progress and of CPU use."""
    me = os.getpid()
    stop = asyncio.Event()
    first: dict[int, float] = {}  # CPU seconds of each process when first seen
    last: dict[int, tuple[str, float]] = {}  # (role, CPU seconds) when last seen: a process that exits keeps its share

    def sample() -> dict[str, Any]:
        procs = _processes()
        server_pids = descendants(server.pid, procs)
        worker_pids = descendants(worker.pid, procs) if worker else set()
        client_pids = (descendants(me, procs) | marked(CLIENT_MARKER)) - server_pids - worker_pids
        for role, pids in (("server_cpu", server_pids), ("worker_cpu", worker_pids), ("client_cpu", client_pids)):
            for p in pids & procs.keys():
                first.setdefault(p, procs[p][1] if not samples else 0.0)  # born during the window: all of it counts
                last[p] = (role, procs[p][1])
        out: dict[str, Any] = {"t": time.perf_counter(), "server_cpu": 0.0, "worker_cpu": 0.0, "client_cpu": 0.0}
        for p, (role, cpu) in last.items():
            out[role] += cpu - first[p]
        out["pairs_done"] = sum(int(store.jobs.get(j)["done"]) for j in job_ids)
        return out

    async def sampler() -> None:
        t0 = time.perf_counter()
        while not stop.is_set():
            samples.append(await asyncio.to_thread(sample))
            if progress:
                progress(min(int(time.perf_counter() - t0), int(cfg.seconds)), int(cfg.seconds))
            try:
                await asyncio.wait_for(stop.wait(), timeout=2.0)
            except TimeoutError:
                pass
        samples.append(await asyncio.to_thread(sample))

    async def clients() -> Any:
        try:
            if cfg.client == "websocket":
                return await websocket_sessions(
                    ws_url, actions, cfg.sessions, cfg.seconds, seed=cfg.seed, timeout_s=cfg.timeout_s, think_s=cfg.think_s
                )
            env = {**os.environ, CLIENT_MARKER.split("=")[0]: CLIENT_MARKER.split("=")[1]}
            return await chromium_sessions(
                base, actions, cfg.sessions, cfg.seconds, seed=cfg.seed, timeout_s=cfg.timeout_s, think_s=cfg.think_s, env=env
            )
        finally:
            stop.set()

    logs, _ = await asyncio.gather(clients(), sampler())
    return logs


def _rows(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["action", "loads", "with result", "p50 s", "p95 s", "max s"]
    rows = [[kind, a["count"], a["ok"], a["p50_ms"] / 1e3, a["p95_ms"] / 1e3, a["max_ms"] / 1e3] for kind, a in result["actions"].items()]
    return headers, rows


def _facts(result: dict[str, Any]) -> list[str]:
    cfg, cores = result["config"], result["cores_used"]
    locked = result["server_log"]["n_locked"] + result["worker_log"]["n_locked"]
    tracebacks = result["server_log"]["tracebacks"] + result["worker_log"]["tracebacks"]
    errs = "; ".join(f"{n} × {msg}" for msg, n in list(result["errors"].items())[:8]) or "none"
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    return [
        f"{cfg['sessions']} {cfg['client']} sessions for {cfg['seconds']:g} s; errors: {result['n_errors']} ({errs})",
        f"'database is locked' / busy-store lines in the logs: {locked}; tracebacks: {tracebacks}",
        f"worker: {result['pairs_written_during_window']} pairs written during the window; jobs "
        + ", ".join(f"{j['job_id']} {j['status']} {j['done']}/{j['total']}" for j in result["jobs"]),
        f"cores used: server {fmt(cores['server_cpu'])}, worker {fmt(cores['worker_cpu'])}, clients {fmt(cores['client_cpu'])}",
        "ok" if result["ok"] else "NOT ok (logs kept in " + result["workdir"] + ")",
    ]


def load_bench_text(result: dict[str, Any]) -> str:
    headers, rows = _rows(result)
    return "\n".join(
        [f"dashboard under load, {result['when']}", machine_line(result["machine"]), text_table(headers, rows), *_facts(result)]
    )


def load_bench_markdown(result: dict[str, Any], command: str) -> str:
    headers, rows = _rows(result)
    cfg = result["config"]
    return "\n".join(
        [
            "## Dashboard under load",
            "",
            f"`{command}` — {result['when']}; {machine_line(result['machine'])}.",
            "",
            f"`streamlit run` of the app on a copy of the store; {cfg['sessions']} users each load, one after the other with "
            f"pauses of up to {cfg['think_s']:g} s, search links (`?q=…`, behaviour and BM25, {len(cfg['queries'])} queries) "
            f"and detail links (`?lora=…`, {cfg['n_loras']} corpus LoRAs and the uploads being characterized), each on a "
            "fresh connection as opening a link does, while `python -m carlos worker` characterizes "
            f"{cfg['worker_jobs']} test LoRAs (tiny backend, `{cfg['protocol']}` protocol) into the same store. Time to "
            "result: from connecting to the end of the page's script, with the page's result checked (`carlos/bench/load.py`).",
            "",
            markdown_table(headers, rows),
            "",
            *[f"* {line}" for line in _facts(result)],
        ]
    )
