"""Servers on loopback: a free port, a server in its own process group (so its children stop with
it), a wait for Streamlit's health endpoint that fails with the server's log, and a stop that
cannot leave a server behind. Used by ``python -m carlos serve`` (:mod:`carlos.serving.replicas`),
the browser benchmarks and the browser tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from carlos.config import REPO_ROOT
from carlos.errors import CarlosError


class ServerStartError(CarlosError, RuntimeError):
    """The server exited, or did not answer its health check in time; the message ends with its log."""


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections take their local ports there)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports nobody uses now (held open together while picked), below the kernel's
    ephemeral range: a port the kernel hands out for ``bind(0)`` is one it may also give an outgoing
    connection (Ray's, a test client's) before the server binds it ("Address already in use")."""
    high = _ephemeral_low()
    low = max(1024, high - 12_000)
    rng = random.SystemRandom()
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", rng.randrange(low, high)))
            except OSError:  # in use (or picked twice): another one
                s.close()
                continue
            socks.append(s)
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


def spawn(
    command: list[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    *,
    cwd: str | Path | None = None,
    die_with_parent: bool = False,
) -> subprocess.Popen:
    """``command`` in ``cwd`` (default: the repository root), in a new process group, its output
    in ``log``. ``die_with_parent``: the kernel sends the child SIGTERM when the thread that
    started it ends, so a parent killed with SIGKILL leaves no server behind (Linux; call it from
    a thread that lives as long as the child should, e.g. the main thread)."""
    with open(log, "w") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            command,
            cwd=cwd or REPO_ROOT,
            env=dict(env or os.environ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_term_with_parent if die_with_parent else None,
        )


def _term_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent thread dies (``PR_SET_PDEATHSIG``)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def stop(proc: subprocess.Popen | None, timeout_s: float = 20.0) -> None:
    """SIGTERM to the process group, SIGKILL after ``timeout_s``."""
    stop_all([proc], timeout_s)


def stop_all(procs: Sequence[subprocess.Popen | None], timeout_s: float = 20.0) -> None:
    """:func:`stop` for several servers at once: SIGTERM to every process group, then one shared
    wait of ``timeout_s``, then SIGKILL to the groups of those still running."""
    running = [p for p in procs if p is not None and p.poll() is None]
    for p in running:
        _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in running:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            _signal_group(p, signal.SIGKILL)
            p.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:  # exited (and reaped) meanwhile
        pass


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
