"""The load benchmark's numbers and tables: per page kind, the targets, per process, and a
baseline revision beside the current tree (``python -m carlos bench load --baseline REF``)."""

from __future__ import annotations

import math
from typing import Any

from carlos.bench.common import machine_line, markdown_table, percentiles, text_table
from carlos.bench.load_clients import Outcome

#: Single session (``--sessions 1``): time to result p50, ms, of these pages (≈ server time).
SINGLE_SESSION_P50_MS = {"detail": 150.0, "search": 100.0}
#: Under load: at least this many sessions with pauses of at most LOAD_THINK_S, a worker
#: writing and at least LOAD_REPLICAS server processes.
LOAD_SESSIONS, LOAD_THINK_S, LOAD_REPLICAS = 20, 0.5, 2
LOAD_P95_MS = 2000.0  # on every page
LOAD_VIEWS_PER_S = 12.0
ROLE_ORDER = ("server", "proxy", "worker", "clients")


def summarize(outcomes: list[Outcome], window_s: float) -> dict[str, Any]:
    """Per page kind the loads, those with a result and their time-to-result percentiles; the
    errors by message; page views (loads with a result) per second of the window."""
    by_kind: dict[str, Any] = {}
    for kind in sorted({o.kind for o in outcomes}):
        done = [o.seconds for o in outcomes if o.kind == kind and o.seconds is not None]
        times = {k: _number(v) for k, v in percentiles(done).items()}  # None, not NaN, when none had a result: strict JSON
        by_kind[kind] = {"count": sum(o.kind == kind for o in outcomes), "ok": len(done), **times}
        # the slowest loads with when they began: a tail bunched in time is a stall, a spread one queueing
        slow = sorted((o for o in outcomes if o.kind == kind and o.seconds is not None), key=lambda o: -(o.seconds or 0))[:10]
        by_kind[kind]["slowest"] = [{"started_s": round(o.started, 2), "ms": round((o.seconds or 0) * 1e3), "query": o.query} for o in slow]
    errors: dict[str, int] = {}
    for o in outcomes:
        if o.error:
            errors[f"{o.kind}: {o.error}"] = errors.get(f"{o.kind}: {o.error}", 0) + 1
    views = sum(o.seconds is not None for o in outcomes)
    return {
        "actions": by_kind,
        "errors": errors,
        "n_errors": sum(errors.values()),
        "page_views": views,
        "window_s": window_s,
        "views_per_s": views / window_s if window_s > 0 else None,
    }


def _number(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _target(description: str, applies: bool, value: Any, limit: float, at_most: bool) -> dict[str, Any]:
    value = _number(value)
    met = None if not applies else value is not None and (value <= limit if at_most else value >= limit)
    return {"description": description, "applies": applies, "value": value, "limit": limit, "met": met}


def evaluate_targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target: what it says, whether this run's configuration is the one it is set for
    (``applies``), the measured value, the limit and ``met`` (None where it does not apply)."""
    cfg, actions = result["config"], result["actions"]
    single = cfg["sessions"] == 1
    loaded = (
        cfg["sessions"] >= LOAD_SESSIONS and cfg.get("replicas", 1) >= LOAD_REPLICAS and cfg["worker"] and cfg["think_s"] <= LOAD_THINK_S
    )
    out = {}
    for kind, limit in SINGLE_SESSION_P50_MS.items():
        value = actions.get(kind, {}).get("p50_ms")
        out[f"single_session_{kind}_p50_ms"] = _target(f"one session: {kind} p50 ≤ {limit:g} ms", single, value, limit, True)
    under = f"{LOAD_SESSIONS}+ sessions, {LOAD_REPLICAS}+ server processes, a worker writing"
    for kind in ("search", "detail", *cfg.get("pages", ())):
        value = actions.get(kind, {}).get("p95_ms")
        out[f"load_{kind}_p95_ms"] = _target(f"{under}: {kind} p95 ≤ {LOAD_P95_MS / 1e3:g} s", loaded, value, LOAD_P95_MS, True)
    out["load_errors"] = _target(f"{under}: 0 errors", loaded, result["n_errors"], 0, True)
    out["load_views_per_s"] = _target(
        f"{under}: ≥ {LOAD_VIEWS_PER_S:g} page views/s", loaded, result["views_per_s"], LOAD_VIEWS_PER_S, False
    )
    return out


def targets_met(targets: dict[str, dict[str, Any]]) -> bool | None:
    """True when every target that applies is met; None when none applies."""
    applying = [t["met"] for t in targets.values() if t["applies"]]
    return all(applying) if applying else None


# -- tables ---------------------------------------------------------------------------------------
def _s(ms: Any) -> float | None:
    v = _number(ms)
    return None if v is None else v / 1e3


def page_rows(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Per page kind: loads, with result, p50/p95/max seconds; with a baseline, its columns first."""
    base = result.get("baseline")
    kinds = sorted(set(result["actions"]) | set(base["actions"] if base else ()))
    headers = ["page", "loads", "with result", "p50 s", "p95 s", "max s"]
    if base:
        ref = base["ref"]
        headers = ["page", f"{ref}: loads", f"{ref}: p50 s", f"{ref}: p95 s", "now: loads", "now: with result", "now: p50 s", "now: p95 s"]
    rows = []
    for kind in kinds:
        a = result["actions"].get(kind, {"count": 0, "ok": 0})
        now = [a["count"], a["ok"], _s(a.get("p50_ms")), _s(a.get("p95_ms"))]
        if base:
            b = base["actions"].get(kind, {"count": 0})
            rows.append([kind, b["count"], _s(b.get("p50_ms")), _s(b.get("p95_ms")), *now])
        else:
            rows.append([kind, *now, _s(a.get("max_ms"))])
    return headers, rows


def _role_key(role: str) -> tuple[int, str]:
    head = "server" if role.startswith("s") and role[1:].isdigit() else role
    return (ROLE_ORDER.index(head) if head in ROLE_ORDER else len(ROLE_ORDER), role)


def process_rows(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Per process (each server process, the proxy, the worker, the clients): cores and resident
    MiB at the window's start and end and at its peak; with a baseline, its rows first."""
    headers = ["side", "process", "cores", "RSS start MiB", "RSS end MiB", "peak RSS MiB"]
    rows = []
    sides = ([(result["baseline"]["ref"], result["baseline"])] if result.get("baseline") else []) + [("now", result)]
    for side, res in sides:
        for role in sorted(res["processes"], key=_role_key):
            p = res["processes"][role]
            name = f"server {role}" if _role_key(role)[0] == 0 and role != "server" else role
            rows.append([side, name, p["cores"], p["rss_start_mib"], p["rss_end_mib"], p["peak_rss_mib"]])
    if not result.get("baseline"):
        headers, rows = headers[1:], [r[1:] for r in rows]
    return headers, rows


def target_lines(result: dict[str, Any]) -> list[str]:
    """One line per target that applies to this run: measured, limit, met."""
    lines = []
    for t in result["targets"].values():
        if t["applies"]:
            value = "-" if t["value"] is None else f"{t['value']:.4g}"
            lines.append(f"target {t['description']}: {value} — {'met' if t['met'] else 'NOT met'}")
    return lines or ["no target applies to this configuration (targets: --sessions 1, or --sessions 20 --replicas 2 with the worker)"]


def facts(result: dict[str, Any]) -> list[str]:
    """The lines below the tables: errors, locked-store lines, the worker, views/s, targets, ok."""
    out = []
    sides = ([(f"{result['baseline']['ref']}: ", result["baseline"])] if result.get("baseline") else []) + [
        ("now: " if result.get("baseline") else "", result)
    ]
    for label, res in sides:
        cfg = res["config"]
        locked = res["server_log"]["n_locked"] + res["worker_log"]["n_locked"]
        tracebacks = res["server_log"]["tracebacks"] + res["worker_log"]["tracebacks"]
        errs = "; ".join(f"{n} × {msg}" for msg, n in list(res["errors"].items())[:8]) or "none"
        vps = "-" if res["views_per_s"] is None else f"{res['views_per_s']:.2f}"
        servers = "one `streamlit run`" if cfg.get("replicas", 1) == 1 else f"{cfg['replicas']} Streamlit processes behind HAProxy"
        out += [
            f"{label}{cfg['sessions']} {cfg['client']} sessions for {cfg['seconds']:g} s against {servers}: "
            f"{res['page_views']} page views, {vps} per second; errors: {res['n_errors']} ({errs})",
            f"{label}'database is locked' / busy-store lines in the logs: {locked}; tracebacks: {tracebacks}",
            f"{label}worker: {res['pairs_written_during_window']} pairs written during the window; jobs "
            + ", ".join(f"{j['job_id']} {j['status']} {j['done']}/{j['total']}" for j in res["jobs"]),
        ]
    out += target_lines(result)
    out.append("ok" if result["ok"] else "NOT ok (logs kept in " + result["workdir"] + ")")
    return out


def load_bench_text(result: dict[str, Any]) -> str:
    pages, procs = page_rows(result), process_rows(result)
    return "\n".join(
        [f"dashboard under load, {result['when']}", machine_line(result["machine"]), text_table(*pages), text_table(*procs), *facts(result)]
    )


def load_bench_markdown(result: dict[str, Any], command: str) -> str:
    cfg, base = result["config"], result.get("baseline")
    pages = ", ".join(cfg.get("pages", ()))
    servers = (
        "`streamlit run` of the app"
        if cfg.get("replicas", 1) == 1
        else f"{cfg['replicas']} Streamlit processes behind HAProxy with cookie affinity (`carlos/serving`)"
    )
    compare = (
        f" The same load ran first against revision `{base['ref']}` ({base['commit'][:10]}, a git worktree with its own store "
        "copy and worker), then against the current tree; columns `now` are the current tree."
        if base
        else ""
    )
    return "\n".join(
        [
            "## Dashboard under load",
            "",
            f"`{command}` — {result['when']}; {machine_line(result['machine'])}.",
            "",
            f"{servers} on a copy of the store; {cfg['sessions']} users each load, one after the other with pauses of up to "
            f"{cfg['think_s']:g} s, a kind of page drawn at random (each as often) and a link of it: search (`?q=…`, behaviour "
            f"and BM25, {len(cfg['queries'])} queries), detail (`?lora=…`, {cfg['n_loras']} corpus LoRAs and the uploads being "
            f"characterized){', ' + pages if pages else ''}; each on a fresh connection as opening a link does, while "
            f"`python -m carlos worker` characterizes {cfg['worker_jobs']} test LoRAs (tiny backend, `{cfg['protocol']}` protocol) "
            "into the same store. Time to result: from connecting to the end of the page's script, with the page's result "
            f"checked (`carlos/bench/load.py`).{compare}",
            "",
            markdown_table(*page_rows(result)),
            "",
            markdown_table(*process_rows(result)),
            "",
            *[f"* {line}" for line in facts(result)],
        ]
    )
