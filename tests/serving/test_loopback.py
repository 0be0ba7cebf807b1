"""The loopback-server helper of the browser benchmarks and tests: a server that dies is reported
with its log, one that answers is yielded and stopped with its whole process group."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from carlos.serving import ServerStartError, free_ports, serve, spawn, wait_healthy


def test_free_ports_are_distinct() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3 and all(1024 <= p < 65536 for p in ports)


def test_a_server_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    proc = spawn([sys.executable, "-c", "print('boom: no such store', flush=True); raise SystemExit(2)"], log)
    with pytest.raises(ServerStartError, match=r"exited with 2\):\nboom: no such store"):
        wait_healthy(f"http://127.0.0.1:{free_ports(1)[0]}", proc, log, timeout_s=30)


def test_serve_yields_a_healthy_server_and_stops_its_process_group(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    # a server answering 200 on the health path, with a child in its process group
    sleeper = "[sys.executable, '-c', 'import time; time.sleep(600)']"
    code = (
        "import http.server, subprocess, sys\n"
        f"open({str(tmp_path / 'child.pid')!r}, 'w').write(str(subprocess.Popen({sleeper}).pid))\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200 if self.path == '/_stcore/health' else 404); self.end_headers()\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )
    with serve([sys.executable, "-c", code], port, tmp_path / "server.log", timeout_s=60) as url:
        assert url == f"http://127.0.0.1:{port}"
        child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and "Z" not in _state(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(child)  # stopped with its parent's group


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (FileNotFoundError, IndexError):
        return "Z"
