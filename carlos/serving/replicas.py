"""Several Streamlit processes behind one address: ``python -m carlos serve --workers N`` (``make serve``).

Streamlit runs every session's script in one Python process, so one process serves at most about
one core of pages (the GIL). :class:`Topology` starts ``workers`` ``streamlit run`` processes on
free loopback ports, each in its own process group, and HAProxy (:mod:`carlos.serving.haproxy`)
on the public address in front of them, with cookie stickiness (a browser's websocket, uploads
and media reach the process that holds its session) and active health checks. The processes
share nothing but the store, as one process's threads do today: one DuckDB file opened in short
connections under its file lock. They share one cookie secret, so a browser that the proxy moves
to another process (its own one went down) keeps its signed cookies.

Start: the Streamlit processes together, each waited for on its own health endpoint, then HAProxy
(its configuration checked first), waited for through the public port until it sees every server
up. Stop (:meth:`Topology.stop`, or SIGINT/SIGTERM/SIGHUP in :func:`serve_forever`): HAProxy first,
so no request reaches a stopping process, then every Streamlit process group; SIGKILL after a
grace period. Each child also gets SIGTERM from the kernel if the process that started it dies
(``PR_SET_PDEATHSIG``), so not even a SIGKILL of the CLI leaves a server behind.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from carlos.config import REPO_ROOT
from carlos.errors import CarlosError, InvalidInputError
from carlos.serving.haproxy import Backend, ProxySettings, check_config, find_haproxy, haproxy_command, haproxy_config, server_states
from carlos.serving.loopback import ServerStartError, free_ports, spawn, stop_all, streamlit_command, wait_healthy

log = logging.getLogger(__name__)

#: Streamlit's cookie secret, from its environment (``server.cookieSecret``): one for all processes.
COOKIE_SECRET_ENV = "STREAMLIT_SERVER_COOKIE_SECRET"


@dataclass(frozen=True)
class ServeConfig:
    """What :class:`Topology` starts."""

    workers: int = 1  # Streamlit processes behind the proxy
    host: str = "127.0.0.1"  # the public address (127.0.0.1: this machine only)
    port: int = 8501  # the public port (HAProxy's)
    script: str = "streamlit_app.py"  # the app, relative to app_dir
    app_dir: Path = REPO_ROOT  # the tree whose app runs (the load benchmark's baseline: a git worktree)
    run_dir: Path | None = None  # configuration, socket and logs (default: a temporary folder, removed after a clean stop)
    backend_ports: tuple[int, ...] = ()  # the Streamlit processes' loopback ports (default: free ones)
    env: Mapping[str, str] | None = None  # their environment (default: this process's)
    start_timeout_s: float = 300.0  # per process, for its first health answer
    check_interval_ms: int = 1000  # HAProxy's health check of each process
    stop_timeout_s: float = 20.0  # grace before SIGKILL
    extra_args: tuple[str, ...] = ()  # more ``streamlit run`` options, e.g. ("--server.maxUploadSize", "200")

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise InvalidInputError(f"workers must be at least 1, got {self.workers}")
        if self.backend_ports and len(self.backend_ports) != self.workers:
            raise InvalidInputError(f"{self.workers} workers need {self.workers} backend ports, got {list(self.backend_ports)}")
        if not (Path(self.app_dir) / self.script).is_file():
            raise InvalidInputError(f"no app at {Path(self.app_dir) / self.script}")


@dataclass
class Replica:
    """One Streamlit process: its HAProxy server name (also its cookie value), port, process and log."""

    name: str
    port: int
    log: Path
    proc: subprocess.Popen | None = None
    restarts: int = 0
    last_start: float = field(default=0.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Topology:
    """``workers`` Streamlit processes behind HAProxy (see the module docstring); a context manager."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.haproxy = find_haproxy()  # before anything starts: a clear error if it is missing
        self._own_run_dir = cfg.run_dir is None
        self.run_dir = Path(cfg.run_dir or tempfile.mkdtemp(prefix="carlos-serve-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ports = list(cfg.backend_ports) or free_ports(cfg.workers)
        self.replicas = [Replica(f"s{i + 1}", p, self.run_dir / f"streamlit-s{i + 1}.log") for i, p in enumerate(ports)]
        self.config_path = self.run_dir / "haproxy.cfg"
        self.proxy_log = self.run_dir / "haproxy.log"
        self.stats_socket = _socket_path(self.run_dir)
        self.proxy: subprocess.Popen | None = None
        env = dict(cfg.env if cfg.env is not None else os.environ)
        env.setdefault(COOKIE_SECRET_ENV, secrets.token_hex(32))
        env["PYTHONUNBUFFERED"] = "1"
        self.env = env

    @property
    def url(self) -> str:
        """The public address, as a browser on this machine reaches it."""
        host = "127.0.0.1" if self.cfg.host in ("0.0.0.0", "") else self.cfg.host
        return f"http://{host}:{self.cfg.port}"

    # -- start and stop ---------------------------------------------------------------------------
    def start(self) -> Topology:
        """Start every process; :class:`ServerStartError` (everything stopped again) if one fails."""
        try:
            for r in self.replicas:
                self._spawn(r)
            for r in self.replicas:
                wait_healthy(r.url, r.proc, r.log, self.cfg.start_timeout_s)
            settings = ProxySettings(
                host=self.cfg.host, port=self.cfg.port, check_interval_ms=self.cfg.check_interval_ms, stats_socket=str(self.stats_socket)
            )
            self.config_path.write_text(haproxy_config([Backend(r.name, r.port) for r in self.replicas], settings))
            check_config(self.config_path, self.haproxy)
            self.proxy = spawn(haproxy_command(self.config_path, self.haproxy), self.proxy_log, self.env, die_with_parent=True)
            wait_healthy(self.url, self.proxy, self.proxy_log, timeout_s=60.0)
            self.wait_until(lambda states: all(s.startswith("UP") for s in states.values()), timeout_s=60.0)
        except BaseException:
            self.stop(clean=False)
            raise
        log.info("serving %s: %d Streamlit processes behind HAProxy (run folder %s)", self.url, len(self.replicas), self.run_dir)
        return self

    def _spawn(self, r: Replica) -> None:
        command = streamlit_command(self.cfg.script, r.port, *self.cfg.extra_args)
        r.proc = spawn(command, r.log, self.env, cwd=self.cfg.app_dir, die_with_parent=True)
        r.last_start = time.monotonic()

    def stop(self, *, clean: bool = True) -> None:
        """HAProxy first, then every Streamlit process group; removes a temporary run folder after a clean stop."""
        stop_all([self.proxy], timeout_s=self.cfg.stop_timeout_s)
        stop_all([r.proc for r in self.replicas], timeout_s=self.cfg.stop_timeout_s)
        if clean and self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> Topology:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop(clean=exc_type is None or issubclass(exc_type, (KeyboardInterrupt, Stopped)))

    # -- what is running --------------------------------------------------------------------------
    def pids(self) -> dict[str, int]:
        """Role -> process id: ``proxy`` and each replica's name."""
        out = {r.name: r.proc.pid for r in self.replicas if r.proc is not None}
        if self.proxy is not None:
            out["proxy"] = self.proxy.pid
        return out

    def states(self) -> dict[str, str]:
        """HAProxy's view: server name -> "UP", "DOWN", … (its runtime socket)."""
        return server_states(self.stats_socket)

    def wait_until(self, ok: Callable[[dict[str, str]], bool], timeout_s: float = 30.0) -> dict[str, str]:
        """Until ``ok(states())``; :class:`ServerStartError` with HAProxy's log after ``timeout_s``."""
        deadline, states = time.monotonic() + timeout_s, {}
        while time.monotonic() < deadline:
            try:
                states = self.states()
                if ok(states):
                    return states
            except OSError:
                pass  # the socket is not there yet
            if self.proxy is not None and self.proxy.poll() is not None:
                break
            time.sleep(0.2)
        raise ServerStartError(f"HAProxy's servers stayed {states or 'unknown'}:\n{_tail(self.proxy_log)}")

    def supervise(self, min_restart_interval_s: float = 10.0) -> list[str]:
        """Restart Streamlit processes that exited (HAProxy puts them back once healthy); the names
        restarted. :class:`ServerStartError` if HAProxy itself exited."""
        if self.proxy is not None and self.proxy.poll() is not None:
            raise ServerStartError(f"HAProxy exited with {self.proxy.returncode}:\n{_tail(self.proxy_log)}")
        restarted = []
        for r in self.replicas:
            if r.proc is not None and r.proc.poll() is not None and time.monotonic() - r.last_start >= min_restart_interval_s:
                log.warning(
                    "Streamlit %s (port %d) exited with %s; restarting it:\n%s", r.name, r.port, r.proc.returncode, _tail(r.log, 800)
                )
                r.log.rename(r.log.with_suffix(f".{r.restarts}.log"))
                r.restarts += 1
                self._spawn(r)
                restarted.append(r.name)
        return restarted


class Stopped(CarlosError):
    """A stop signal (SIGTERM, SIGHUP) arrived while serving."""


def serve_forever(cfg: ServeConfig, *, on_ready: Callable[[Topology], None] | None = None, poll_s: float = 1.0) -> str:
    """Start the topology, keep its Streamlit processes running, stop everything on SIGINT,
    SIGTERM or SIGHUP; returns the name of the signal that stopped it. Call from the main thread."""
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stopping:  # a second signal while stopping must not cut the stop short
            raise Stopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    topology = Topology(cfg)
    try:
        try:
            topology.start()
            if on_ready:
                on_ready(topology)
            while True:
                time.sleep(poll_s)
                topology.supervise()
        except Stopped as e:
            stopping = True
            log.info("%s: stopping HAProxy and %d Streamlit processes", e, len(topology.replicas))
            topology.stop()
            return str(e)
        except BaseException:
            stopping = True
            topology.stop(clean=False)
            raise
    finally:
        stopping = True
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _socket_path(run_dir: Path) -> Path:
    """A unix socket path short enough for the kernel (108 bytes), in ``run_dir`` when it fits."""
    path = run_dir / "haproxy.sock"
    if len(str(path)) < 100:
        return path
    return Path(tempfile.mkdtemp(prefix="carlos-hap-")) / "haproxy.sock"


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"
