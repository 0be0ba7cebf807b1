"""Dashboards on loopback for the browser benchmarks and tests: a free port, a server in its own
process group (so its children stop with it), a wait for Streamlit's health endpoint that fails
with the server's log, and a stop that cannot leave a server behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from carlos.config import REPO_ROOT
from carlos.errors import CarlosError


class ServerStartError(CarlosError, RuntimeError):
    """The server exited, or did not answer its health check in time; the message ends with its log."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports nobody listens on now (held open together while picked)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """A loopback port nobody listens on now."""
    return free_ports(1)[0]


def streamlit_command(script: str | Path, port: int, *extra: str) -> list[str]:
    """``streamlit run script`` headless on ``127.0.0.1:port``, without usage statistics."""
    args = ["--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    return [sys.executable, "-m", "streamlit", "run", str(script), *args, *extra]


def spawn(command: list[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """``command`` in the repository root, in a new process group, its output in ``log``."""
    with open(log, "w") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=dict(env or os.environ), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen | None, timeout_s: float = 20.0) -> None:
    """SIGTERM to the process group, SIGKILL after ``timeout_s``."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 180.0, path: str = "/_stcore/health") -> None:
    """Until ``url + path`` answers 200; :class:`ServerStartError` if the server exits or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            state = f"exited with {proc.returncode}" if proc.poll() is not None else f"no answer in {timeout_s:.0f} s"
            raise ServerStartError(
                f"{' '.join(map(str, proc.args[:4]))} did not start ({state}):\n{log.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.5)


@contextmanager
def serve(command: list[str], port: int, log: Path, env: Mapping[str, str] | None = None, timeout_s: float = 180.0) -> Iterator[str]:
    """Start ``command`` (listening on ``port``), yield its URL once healthy, stop it after."""
    proc = spawn(command, log, env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, log, timeout_s)
        yield url
    finally:
        stop(proc)
