"""Serving the dashboard: Streamlit processes on loopback (:mod:`carlos.serving.loopback`), and
several of them behind HAProxy with session affinity (:mod:`carlos.serving.replicas`,
:mod:`carlos.serving.haproxy`): ``python -m carlos serve --workers N`` (``make serve``).

Imports only :mod:`carlos.config` and :mod:`carlos.errors`, so the CLI, the benchmarks and the
tests can all start servers with it.
"""

from carlos.serving.haproxy import ProxyMissingError, find_haproxy, haproxy_config
from carlos.serving.loopback import ServerStartError, free_port, free_ports, serve, spawn, stop, stop_all, streamlit_command, wait_healthy
from carlos.serving.replicas import ServeConfig, Topology, serve_forever

__all__ = [
    "ProxyMissingError",
    "ServeConfig",
    "ServerStartError",
    "Topology",
    "find_haproxy",
    "free_port",
    "free_ports",
    "haproxy_config",
    "serve",
    "serve_forever",
    "spawn",
    "stop",
    "stop_all",
    "streamlit_command",
    "wait_healthy",
]
