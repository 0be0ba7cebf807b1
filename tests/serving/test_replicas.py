"""Several Streamlit processes behind HAProxy, with real processes: a browser's cookie pins it to
one process, a dead process is taken out and restarted, a failed start and every stop of
``python -m carlos serve`` (SIGTERM, and SIGKILL of the command itself) leave no process behind.
The dashboard itself behind the proxy, in a browser: tests/test_browser_replicas.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from carlos.config import REPO_ROOT
from carlos.errors import InvalidInputError
from carlos.serving import ServeConfig, ServerStartError, Topology, free_port

APP = "import streamlit as st\n\nst.write('hello')\n"


def _gone(pid: int, timeout_s: float = 30.0) -> bool:
    """The process exited (a zombie waiting for a parent that reaps it counts as exited)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def _get(url: str, cookie: str = "") -> tuple[int, str]:
    """(status, the SRV value of a Set-Cookie, or "")."""
    req = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        set_cookie = r.headers.get("Set-Cookie") or ""
        return r.status, set_cookie.split(";")[0].removeprefix("SRV=") if set_cookie.startswith("SRV=") else ""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def _config(app_dir: Path, **kw: object) -> ServeConfig:
    return ServeConfig(workers=2, port=free_port(), script="app.py", app_dir=app_dir, run_dir=app_dir / "run", check_interval_ms=300, **kw)


def test_config_checks_its_inputs(app_dir: Path) -> None:
    with pytest.raises(InvalidInputError, match="at least 1"):
        ServeConfig(workers=0, script="app.py", app_dir=app_dir)
    with pytest.raises(InvalidInputError, match="2 backend ports"):
        ServeConfig(workers=2, backend_ports=(1,), script="app.py", app_dir=app_dir)
    with pytest.raises(InvalidInputError, match="no app"):
        ServeConfig(script="nothing.py", app_dir=app_dir)


def test_cookie_pins_a_browser_and_a_dead_process_is_taken_out_and_restarted(app_dir: Path) -> None:
    with Topology(_config(app_dir)) as topo:
        assert topo.states() == {"s1": "UP", "s2": "UP"}
        status, first = _get(f"{topo.url}/")
        assert status == 200 and first in ("s1", "s2")
        for _ in range(3):  # with its cookie, every request goes to its server (no new cookie)
            assert _get(f"{topo.url}/", f"SRV={first}") == (200, "")
        other = "s2" if first == "s1" else "s1"
        pinned = next(r for r in topo.replicas if r.name == first)
        os.killpg(pinned.proc.pid, signal.SIGKILL)
        topo.wait_until(lambda s: s[first] == "DOWN" and s[other] == "UP", timeout_s=20)
        assert _get(f"{topo.url}/", f"SRV={first}") == (200, other)  # moved to the healthy one, cookie rewritten
        assert topo.supervise(min_restart_interval_s=0.0) == [first]
        topo.wait_until(lambda s: s[first] == "UP", timeout_s=60)
        pids = topo.pids()
    assert all(_gone(p) for p in pids.values())
    assert (app_dir / "run" / "haproxy.cfg").exists() and (
        app_dir / "run" / f"streamlit-{first}.0.log"
    ).exists()  # a given run folder stays


def test_a_proxy_that_cannot_bind_is_reported_and_nothing_stays(app_dir: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        cfg = ServeConfig(workers=2, port=taken.getsockname()[1], script="app.py", app_dir=app_dir, run_dir=app_dir / "run")
        topo = Topology(cfg)
        with pytest.raises(ServerStartError, match="(?i)bind|address"):
            topo.start()
        assert topo.pids() and all(_gone(p) for p in topo.pids().values())
    finally:
        taken.close()


def _serve(tmp_path: Path, *more: str) -> tuple[subprocess.Popen, dict]:
    """``python -m carlos serve --workers 2 --json`` (the real app; no page is loaded) and its first line."""
    port = free_port()
    cmd = [sys.executable, "-m", "carlos", "--db", str(tmp_path / "unused.duckdb"), "serve", "--workers", "2", "--port", str(port), *more]
    proc = subprocess.Popen([*cmd, "--json"], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        pytest.fail(f"serve did not start: {proc.stderr.read()[-3000:]}")
    info = json.loads(line)
    assert set(info["pids"]) == {"s1", "s2", "proxy"} and info["url"] == f"http://127.0.0.1:{port}"
    assert _get(f"{info['url']}/_stcore/health")[0] == 200
    return proc, info


def test_serve_command_stops_everything_on_sigterm(tmp_path: Path) -> None:
    proc, info = _serve(tmp_path)
    assert not any(_gone(p, timeout_s=0.1) for p in info["pids"].values())
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"stopped": "SIGTERM"}
    assert all(_gone(p, timeout_s=5) for p in info["pids"].values())
    assert not Path(info["run_dir"]).exists()  # its temporary run folder removed


def test_serve_command_killed_outright_leaves_no_server(tmp_path: Path) -> None:
    proc, info = _serve(tmp_path, "--run-dir", str(tmp_path / "run"))  # nothing removes it after a SIGKILL
    proc.kill()  # SIGKILL: no handler runs; the kernel's parent-death signal stops the children
    proc.communicate(timeout=30)
    assert all(_gone(p) for p in info["pids"].values()), info["pids"]
