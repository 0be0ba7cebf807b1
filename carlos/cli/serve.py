"""``serve``: the dashboard as several Streamlit processes behind HAProxy on one address (``make serve``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from carlos.cli.common import add_json


def _serve(args: argparse.Namespace) -> int:
    from carlos.serving import ServeConfig, Topology, serve_forever

    env = dict(os.environ)
    if args.db:  # the dashboard reads its store from the environment, as `make run` gives it
        env["CARLOS_DB"] = str(Path(args.db).expanduser().resolve())
    cfg = ServeConfig(
        workers=args.workers or os.cpu_count() or 1,
        host=args.host,
        port=args.port,
        env=env,
        run_dir=Path(args.run_dir) if args.run_dir else None,
    )

    def ready(topology: Topology) -> None:
        if args.json:  # one line once every process is up: where it listens and what to watch
            info = {"url": topology.url, "pids": topology.pids(), "ports": {r.name: r.port for r in topology.replicas}}
            print(json.dumps({**info, "run_dir": str(topology.run_dir)}), flush=True)
        procs = ", ".join(f"{r.name} on 127.0.0.1:{r.port} (pid {r.proc.pid})" for r in topology.replicas if r.proc)
        print(f"CARLoS on {topology.url}: {len(topology.replicas)} Streamlit processes behind HAProxy", file=sys.stderr)
        print(f"  {procs}; HAProxy pid {topology.proxy.pid if topology.proxy else '-'}", file=sys.stderr)
        print(f"  configuration and logs in {topology.run_dir}; Ctrl-C (or SIGTERM) stops all of them", file=sys.stderr)
        sys.stderr.flush()

    stopped_by = serve_forever(cfg, on_ready=ready)
    print(f"stopped ({stopped_by}): HAProxy and every Streamlit process", file=sys.stderr)
    if args.json:
        print(json.dumps({"stopped": stopped_by}), flush=True)
    return 0


def register(sub: Any) -> None:
    """``serve``."""
    p = sub.add_parser(
        "serve",
        help="serve the dashboard with several Streamlit processes behind HAProxy (session affinity, health checks)",
        description="Starts WORKERS `streamlit run` processes on free loopback ports and HAProxy on HOST:PORT in front of "
        "them, with cookie session affinity and health checks; SIGINT/SIGTERM stops all of them. Needs Debian's haproxy "
        "(`make haproxy`). One process without a proxy: `make run`.",
    )
    p.add_argument("--workers", type=int, default=None, help="Streamlit processes (default: one per core)")
    p.add_argument("--port", type=int, default=8501, help="the public port (HAProxy's)")
    p.add_argument("--host", default="127.0.0.1", help="the public address (default 127.0.0.1: this machine only)")
    p.add_argument("--run-dir", help="where the generated HAProxy configuration and the logs go (default: a temporary folder)")
    add_json(p)
    p.set_defaults(func=_serve)
