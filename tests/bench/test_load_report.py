"""The load benchmark's pure parts and helpers (never timings): which targets apply and are met,
the tables side by side with a baseline, the page mix and checks, per-process readings, the
store preparation by a tree's own code, and the baseline worktree."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from carlos.bench.load import LoadBenchConfig, prepare_store, run_load_bench, worktree
from carlos.bench.load_clients import Outcome, check_elements, draw, plan
from carlos.bench.load_procs import ProcessMeter, memory_kib
from carlos.bench.load_report import evaluate_targets, load_bench_markdown, load_bench_text, page_rows, process_rows, summarize, targets_met
from carlos.config import REPO_ROOT
from carlos.errors import InvalidInputError
from carlos.store.store import Store

PAGES = ("search", "detail", "risk", "map", "review")


def _actions(p95_ms: float = 900.0, p50_ms: float = 80.0) -> dict[str, Any]:
    return {k: {"count": 10, "ok": 10, "p50_ms": p50_ms, "p95_ms": p95_ms, "min_ms": 1.0, "max_ms": p95_ms} for k in PAGES}


def _result(sessions: int = 20, replicas: int = 2, views: float = 13.0, errors: int = 0, **actions: Any) -> dict[str, Any]:
    cfg = {**LoadBenchConfig().__dict__, "sessions": sessions, "replicas": replicas}
    proc = {"cores": 0.5, "cpu_s": 30.0, "rss_start_mib": 900.0, "rss_end_mib": 950.0, "peak_rss_mib": 1000.0}
    result = {
        "config": cfg,
        "when": "2026-12-07 00:00 UTC",
        "machine": {"cpu": "test", "cores": 2, "mem_gib": 23.5, "torch": "x", "torch_threads": 2, "load_avg_1m": 0.5},
        "actions": actions.get("actions", _actions()),
        "errors": {"detail: boom": errors} if errors else {},
        "n_errors": errors,
        "page_views": int(views * 60),
        "window_s": 60.0,
        "views_per_s": views,
        "pairs_written_during_window": 12,
        "jobs": [{"job_id": 1, "status": "running", "done": 12, "total": 70}],
        "processes": {"worker": proc, "s2": proc, "proxy": proc, "s1": proc, "clients": {**proc, "rss_start_mib": None}},
        "server_log": {"n_locked": 0, "tracebacks": 0},
        "worker_log": {"n_locked": 0, "tracebacks": 0},
        "ok": True,
        "workdir": "/tmp/x",
    }
    result["targets"] = evaluate_targets(result)
    return result


def test_load_targets_apply_to_twenty_sessions_on_two_processes() -> None:
    t = _result()["targets"]
    loaded = [k for k, v in t.items() if v["applies"]]
    assert sorted(loaded) == sorted([f"load_{k}_p95_ms" for k in PAGES] + ["load_errors", "load_views_per_s"])
    assert all(t[k]["met"] for k in loaded) and targets_met(t) is True
    assert t["single_session_detail_p50_ms"] == {
        "description": "one session: detail p50 ≤ 150 ms",
        "applies": False,
        "value": 80.0,
        "limit": 150.0,
        "met": None,
    }
    slow = _result(actions=_actions(p95_ms=2500.0))["targets"]
    assert slow["load_map_p95_ms"]["met"] is False and targets_met(slow) is False
    assert _result(views=11.9)["targets"]["load_views_per_s"]["met"] is False
    assert _result(errors=1)["targets"]["load_errors"]["met"] is False
    nothing = _result(actions={**_actions(), "review": {"count": 3, "ok": 0, "p50_ms": float("nan"), "p95_ms": float("nan")}})
    assert nothing["targets"]["load_review_p95_ms"] == {**nothing["targets"]["load_review_p95_ms"], "value": None, "met": False}


def test_single_session_targets_and_none_for_other_configurations() -> None:
    t = _result(sessions=1, replicas=1, actions=_actions(p50_ms=120.0))["targets"]
    assert t["single_session_detail_p50_ms"]["met"] is True and t["single_session_search_p50_ms"]["met"] is False
    assert not any(v["applies"] for k, v in t.items() if k.startswith("load_"))
    assert targets_met(_result(sessions=20, replicas=1)["targets"]) is None  # one process: no target is set for it
    assert targets_met(_result(sessions=5)["targets"]) is None


def test_summary_counts_views_and_errors() -> None:
    outs = [Outcome("detail", "lora=a", 0.0, 0.2), Outcome("detail", "lora=b", 1.0, None, "timeout"), Outcome("map", "", 2.0, 0.4)]
    s = summarize(outs, window_s=2.0)
    assert s["page_views"] == 2 and s["views_per_s"] == 1.0 and s["n_errors"] == 1
    assert s["errors"] == {"detail: timeout": 1} and s["actions"]["detail"]["count"] == 2 and s["actions"]["detail"]["ok"] == 1
    assert summarize([Outcome("risk", "", 0.0, None, "no scatter")], 1.0)["actions"]["risk"]["p95_ms"] is None


def test_tables_with_and_without_a_baseline() -> None:
    now = _result()
    headers, rows = page_rows(now)
    assert headers[:3] == ["page", "loads", "with result"] and [r[0] for r in rows] == sorted(PAGES)
    headers, rows = process_rows(now)
    assert headers[0] == "process" and [r[0] for r in rows] == ["server s1", "server s2", "proxy", "worker", "clients"]
    now["baseline"] = {**_result(replicas=1), "ref": "HEAD", "commit": "76c030b" * 5}
    now["baseline"]["processes"] = {"server": now["processes"]["s1"], "worker": now["processes"]["worker"]}
    headers, rows = page_rows(now)
    assert headers[1] == "HEAD: loads" and headers[4] == "now: loads" and len(rows[0]) == len(headers)
    headers, rows = process_rows(now)
    assert [r[:2] for r in rows][:3] == [["HEAD", "server"], ["HEAD", "worker"], ["now", "server s1"]]
    text, md = load_bench_text(now), load_bench_markdown(now, "python -m carlos bench load --replicas 2 --baseline HEAD")
    assert "HEAD: 20 websocket sessions" in text and "now: 20 websocket sessions" in text and "met" in text
    assert "revision `HEAD` (76c030b76c" in md and "| page | HEAD: loads |" in md


def test_plan_page_mix_and_page_checks() -> None:
    acts = plan(["pixel art"], [f"civitai:{i}" for i in range(30)], pages=("risk", "map", "review"))
    assert [(a.kind, a.page, a.query) for a in acts[-3:]] == [("risk", "risk", ""), ("map", "map", ""), ("review", "review", "")]
    rng = random.Random(0)
    kinds = Counter(draw(rng, acts).kind for _ in range(5000))
    assert set(kinds) == set(PAGES) and min(kinds.values()) > 850  # every kind as often (1000 each), not every link
    title = ("heading:h1", "A page")
    assert check_elements("risk", [title, ("plotly_chart", "")]) is None
    assert "scatter" in check_elements("risk", [title])
    assert check_elements("map", [title, ("plotly_chart", ""), ("heading", "Regions")]) is None
    assert "regions" in check_elements("map", [title, ("plotly_chart", "")])
    assert check_elements("review", [("heading:h1", "Review queue & audit log"), ("heading", "Audit log")]) is None
    assert "audit log" in check_elements("review", [("heading:h1", "Review queue & audit log")])  # the title is not the log
    with pytest.raises(ValueError, match="pages must be among"):
        plan(["x"], ["y"], pages=("nope",))
    with pytest.raises(InvalidInputError, match="replicas"):
        LoadBenchConfig(replicas=0)
    with pytest.raises(InvalidInputError, match="pages"):
        LoadBenchConfig(pages=("search",))


def test_process_meter_reads_cpu_and_memory_per_role() -> None:
    burn = (
        "import time\nx = b'x' * (64 << 20)\nt = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\nprint(1, flush=True)\ninput()"
    )
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        meter = ProcessMeter({"worker": child.pid})
        meter.sample()
        assert child.stdout.readline().strip() == "1"
        meter.sample()
        report = meter.report()
        assert set(report) == {"worker", "clients"}
        assert report["worker"]["cpu_s"] > 0.1 and report["worker"]["cores"] > 0
        assert report["worker"]["peak_rss_mib"] >= 64 and report["worker"]["rss_end_mib"] >= 64
        assert report["clients"]["peak_rss_mib"] is None
        assert memory_kib(child.pid)[1] >= 64 * 1024
    finally:
        child.communicate("\n", timeout=10)
    assert memory_kib(child.pid) is None


def test_store_is_prepared_by_the_trees_own_code(real_store_path: Path, tmp_path: Path) -> None:
    cfg = LoadBenchConfig(n_loras=3, worker_jobs=1)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "HOME": str(tmp_path)}
    copy, keys, job_ids = prepare_store(cfg, real_store_path, tmp_path, REPO_ROOT, env)
    assert copy == str(tmp_path / "carlos.duckdb") and Path(copy).exists() and len(keys) == 4 and len(job_ids) == 1
    assert (tmp_path / "load-0.safetensors").exists() and all(k.startswith("civitai:") for k in keys[:3])


def test_on_a_team_store_the_copy_is_a_new_database_that_goes_afterwards(real_store_path: Path, tmp_path: Path, pg_server: Any) -> None:
    import psycopg

    from carlos.store.postgres import drop_database

    admin = pg_server.get_uri()
    cfg = LoadBenchConfig(n_loras=3, worker_jobs=1, store_url=admin)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "HOME": str(tmp_path)}
    copy, keys, job_ids = prepare_store(cfg, real_store_path, tmp_path, REPO_ROOT, env)
    name = copy.split("?")[0].rsplit("/", 1)[1]
    assert name.startswith("carlos_load_") and len(keys) == 4 and len(job_ids) == 1
    assert Store(copy).table_counts()["loras"] == 741  # the corpus copied, and the queued upload
    drop_database(admin, name)
    with psycopg.connect(admin) as con:
        assert con.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone()[0] == 0
    with pytest.raises(InvalidInputError, match="embedded store only"):
        run_load_bench(cfg, real_store_path, baseline="HEAD")


def test_baseline_worktree_is_made_and_removed() -> None:
    with pytest.raises(InvalidInputError, match="not a revision"):
        with worktree("no-such-revision-xyz"):
            pass
    with worktree("HEAD") as (tree, commit):
        assert (tree / "streamlit_app.py").is_file() and len(commit) == 40
        listed = subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
        assert str(tree) in listed
    assert not tree.exists()
    listed = subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    assert str(tree) not in listed
